package taskdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CA is a certificate authority made for one test: its certificate and key live in memory
// and its certificate in a PEM file under the test's temp dir, which the test framework
// removes. Nothing is committed to the repository. A CA is not safe for concurrent use.
type CA struct {
	Cert     *x509.Certificate
	CertFile string // PEM of Cert: give it as tls.client_ca_file, or to a client as its root
	key      *ecdsa.PrivateKey
	dir      string
	serial   int64
}

// Leaf says what certificate CA.Issue makes.
type Leaf struct {
	Name string // the subject's common name, and the base name of its files
	// SANs are the subject alternative names: an IP address ("127.0.0.1"), a URI (anything
	// with "://", such as "spiffe://example.org/app") or else a DNS name.
	SANs []string
	// Client makes a client certificate (ExtKeyUsageClientAuth); else a server one.
	Client bool
	// Expired makes a certificate whose validity ended an hour ago.
	Expired bool
}

// NewCA makes a CA named name whose PEM certificate file is in a new temp dir of t.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{Cert: cert, key: key, dir: t.TempDir(), serial: 1}
	ca.CertFile = writePEM(t, filepath.Join(ca.dir, name+"-ca.pem"), "CERTIFICATE", der)
	return ca
}

// Pool returns a pool holding the CA's certificate, for tls.Config.RootCAs or ClientCAs.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue makes a certificate signed by the CA and returns the paths of its PEM certificate
// and key files.
func (ca *CA) Issue(t testing.TB, l Leaf) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: l.Name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if l.Client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if l.Expired {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	}
	for _, san := range l.SANs {
		switch {
		case net.ParseIP(san) != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(san))
		case strings.Contains(san, "://"):
			u, err := url.Parse(san)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, u)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, san)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writePEM(t, filepath.Join(ca.dir, l.Name+".pem"), "CERTIFICATE", der)
	keyFile = writePEM(t, filepath.Join(ca.dir, l.Name+"-key.pem"), "PRIVATE KEY", keyDER)
	return certFile, keyFile
}

// ServerLeaf is the usual server certificate of a test daemon on a loopback address:
// valid for 127.0.0.1, ::1 and localhost.
func ServerLeaf(name string) Leaf {
	return Leaf{Name: name, SANs: []string{"127.0.0.1", "::1", "localhost"}}
}

// ClientTLS returns a client tls.Config that trusts ca and, if certFile is not "",
// presents the certificate of certFile and keyFile.
func ClientTLS(t testing.TB, ca *CA, certFile, keyFile string) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.Pool()}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

func writePEM(t testing.TB, path, typ string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
