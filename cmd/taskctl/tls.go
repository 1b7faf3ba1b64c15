package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
)

// tlsOptions are the --tls-* flags: how taskctl speaks TLS to a tls:// address. Each
// flag not given is taken from its environment variable.
type tlsOptions struct {
	ca, cert, key, serverName string
}

// tlsFlags are the flags, their variables, and what each is for.
var tlsFlags = []struct{ name, env, help string }{
	{"tls-ca", "TASKD_TLS_CA", "PEM file of the CA that signed taskd's certificate, for a tls:// address (default $TASKD_TLS_CA, else the system's roots)"},
	{"tls-cert", "TASKD_TLS_CERT", "PEM file of the client certificate to present to a tls:// address that requires one (default $TASKD_TLS_CERT)"},
	{"tls-key", "TASKD_TLS_KEY", "PEM file of the client certificate's private key (default $TASKD_TLS_KEY)"},
	{"tls-server-name", "TASKD_TLS_SERVER_NAME", "name taskd's certificate must be valid for (default $TASKD_TLS_SERVER_NAME, else the host of --addr)"},
}

// addFlags defines the flags with stringVar (a pflag.FlagSet's StringVar).
func (t *tlsOptions) addFlags(stringVar func(p *string, name, value, usage string)) {
	for i, p := range []*string{&t.ca, &t.cert, &t.key, &t.serverName} {
		stringVar(p, tlsFlags[i].name, "", tlsFlags[i].help)
	}
}

// config returns the tls.Config for addr (the address taskctl dials: --addr, else
// $TASKD_ADDR), or nil: nil for an address that is not tls:// (a --tls-* flag given with
// one is a usage error; the variables are ignored) and for a tls:// address with no flag
// and no variable (the client's default: the system's roots).
func (t *tlsOptions) config(addr string) (*tls.Config, error) {
	vals := []string{t.ca, t.cert, t.key, t.serverName}
	var given []string // names of the flags given on the command line
	for i := range vals {
		if vals[i] != "" {
			given = append(given, "--"+tlsFlags[i].name)
		}
	}
	if !strings.HasPrefix(addr, "tls://") {
		if len(given) > 0 {
			return nil, &usageError{fmt.Errorf("%s: only a tls:// address uses TLS, and the address is %q; give --addr tls://HOST:PORT", strings.Join(given, ", "), addr)}
		}
		return nil, nil
	}
	from := make([]string, len(vals)) // how to name each value in errors
	for i := range vals {
		from[i] = "--" + tlsFlags[i].name
		if vals[i] == "" {
			vals[i] = os.Getenv(tlsFlags[i].env)
			from[i] += " (from $" + tlsFlags[i].env + ")"
		}
	}
	ca, cert, key, serverName := vals[0], vals[1], vals[2], vals[3]
	if ca == "" && cert == "" && key == "" && serverName == "" {
		return nil, nil
	}
	switch {
	case cert != "" && key == "":
		return nil, &usageError{fmt.Errorf("%s is given without --tls-key: give the certificate's private key too", from[1])}
	case key != "" && cert == "":
		return nil, &usageError{fmt.Errorf("%s is given without --tls-cert: give the client certificate too", from[2])}
	}
	cfg := &tls.Config{ServerName: serverName}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("%s: %w; give the PEM file of the CA that signed taskd's certificate", from[0], err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: %s holds no PEM certificate (BEGIN CERTIFICATE); give the CA that signed taskd's certificate", from[0], ca)
		}
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w; give a PEM client certificate and its private key", from[1], from[2], err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
