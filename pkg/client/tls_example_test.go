package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/taskd-dev/taskd/pkg/client"
)

// A client of a taskd on another host, over TLS with a client certificate (mTLS): RootCAs
// is the CA that signed taskd's certificate, Certificates the client's own, which taskd
// checks against its tls.client_ca_file. taskd knows the client by the names of its
// certificate (here a SPIFFE ID): `taskctl checkouts` shows them, and an interface's
// allow.tls_names can match them. (Not run: it needs a taskd at tasks.example.org.)
func ExampleConfig_tls() {
	caPEM, err := os.ReadFile("/etc/myapp/taskd-ca.pem")
	if err != nil {
		fmt.Println(err)
		return
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		fmt.Println("no CA certificate in /etc/myapp/taskd-ca.pem")
		return
	}
	cert, err := tls.LoadX509KeyPair("/etc/myapp/client.pem", "/etc/myapp/client-key.pem")
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := client.New(client.Config{
		Addr:      "tls://tasks.example.org:7443",
		Interface: "passwd",
		TLS:       &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var hashed string
	if err := c.Call(ctx, "hash", &hashed, "secret"); err != nil {
		fmt.Println(err) // a TLS failure says what to change: RootCAs, ServerName, Certificates
		return
	}
	fmt.Println(hashed)
}
