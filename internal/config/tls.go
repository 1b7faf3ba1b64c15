package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/taskd-dev/taskd/internal/wire"
)

// TLS is the top-level tls key: the certificate taskd serves on its tls:// listeners and,
// with ClientCAFile, the CA that client certificates must be signed by (mTLS). Paths are
// relative to taskd's working directory. Every key reloads live: a reload reads the files
// again (certificate rotation), and a reload whose files do not load is refused.
type TLS struct {
	CertFile     string `yaml:"cert_file"`      // PEM: taskd's certificate, then any intermediates
	KeyFile      string `yaml:"key_file"`       // PEM: its private key
	ClientCAFile string `yaml:"client_ca_file"` // PEM: CA certificates; "" = no client certificates asked for
	MinVersion   string `yaml:"min_version"`    // "1.2" (the default) or "1.3"
}

// DefaultTLSMinVersion is tls.min_version's default.
const DefaultTLSMinVersion = "1.2"

// TLSMinVersions are the values tls.min_version accepts, and their crypto/tls versions.
var TLSMinVersions = map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

// TLSFiles is what the files of a TLS config hold, read and checked. It is a plain value
// once made: the daemon swaps in a new one on reload and never changes one.
type TLSFiles struct {
	Cert       tls.Certificate // with Leaf set
	ClientCAs  *x509.CertPool  // nil without client_ca_file
	MinVersion uint16          // tls.VersionTLS12 or tls.VersionTLS13
}

// normalize fills min_version's default.
func (t *TLS) normalize() {
	if t.MinVersion == "" {
		t.MinVersion = DefaultTLSMinVersion
	}
}

// Configured reports whether taskd has a certificate to serve TLS with.
func (t TLS) Configured() bool { return t.CertFile != "" || t.KeyFile != "" }

// Load reads and checks the files of t: the certificate and key (they must match, and
// the certificate must not have expired) and the client CA file (it must hold at least
// one certificate). Each problem names its key, as in "tls.key_file: ...", and says what
// to do. Load is safe for concurrent use; it reads the files each time (certificate
// rotation is a reload).
func (t TLS) Load() (*TLSFiles, error) {
	errs := t.validate()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	f, errs := t.load()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return f, nil
}

// validate checks the keys themselves, without reading the files.
func (t TLS) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &problem{key: "tls." + key, msg: fmt.Sprintf(format, args...)})
	}
	if _, ok := TLSMinVersions[t.MinVersion]; !ok {
		bad("min_version", "%q is not one of \"1.2\", \"1.3\" (TLS 1.3 is negotiated whenever both sides support it)", t.MinVersion)
	}
	switch {
	case t.CertFile == "" && t.KeyFile != "":
		bad("cert_file", "not set, but tls.key_file is: give the PEM file of taskd's certificate too")
	case t.CertFile != "" && t.KeyFile == "":
		bad("key_file", "not set, but tls.cert_file is: give the PEM file of the certificate's private key too")
	case t.CertFile == "" && t.ClientCAFile != "":
		bad("client_ca_file", "set without tls.cert_file and tls.key_file: client certificates are asked for only on tls:// listeners, which need taskd's own certificate")
	}
	return errs
}

// load reads the files of a t that validate accepted.
func (t TLS) load() (*TLSFiles, []error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &problem{key: "tls." + key, msg: fmt.Sprintf(format, args...)})
	}
	f := &TLSFiles{MinVersion: TLSMinVersions[t.MinVersion]}
	if t.CertFile != "" {
		certPEM, cerr := os.ReadFile(t.CertFile)
		if cerr != nil {
			bad("cert_file", "%v: give the PEM file of taskd's certificate (readable by taskd's user)", cerr)
		}
		keyPEM, kerr := os.ReadFile(t.KeyFile)
		if kerr != nil {
			bad("key_file", "%v: give the PEM file of the certificate's private key (readable by taskd's user)", kerr)
		}
		if cerr == nil && kerr == nil {
			cert, err := tls.X509KeyPair(certPEM, keyPEM)
			switch {
			case err != nil && strings.Contains(err.Error(), "does not match"):
				bad("key_file", "%v: %s is not the private key of the certificate in %s; give the key it was issued for", err, t.KeyFile, t.CertFile)
			case err != nil && (strings.Contains(err.Error(), "key input") || strings.Contains(err.Error(), "private key")):
				bad("key_file", "%s holds no private key taskd can use: %v; give the PEM private key (BEGIN ... PRIVATE KEY) of the certificate in %s", t.KeyFile, err, t.CertFile)
			case err != nil:
				bad("cert_file", "%s and %s do not make a certificate and key: %v; give PEM files (BEGIN CERTIFICATE, then BEGIN ... PRIVATE KEY)", t.CertFile, t.KeyFile, err)
			case cert.Leaf != nil && time.Now().After(cert.Leaf.NotAfter):
				bad("cert_file", "the certificate in %s expired at %s: renew it, then reload", t.CertFile, cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
			default:
				f.Cert = cert
			}
		}
	}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		switch {
		case err != nil:
			bad("client_ca_file", "%v: give the PEM file of the CA certificates that sign client certificates", err)
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				bad("client_ca_file", "%s holds no PEM certificate (BEGIN CERTIFICATE): give the CA certificates that sign client certificates", t.ClientCAFile)
			} else {
				f.ClientCAs = pool
			}
		}
	}
	return f, errs
}

// validateTLS checks the tls key against the listeners: a tls:// listener needs a
// certificate, and files that are given must load.
func (c Config) validateTLS() []error {
	errs := c.TLS.validate()
	needed := slices.ContainsFunc(c.Listen, func(s string) bool {
		a, err := wire.ParseAddr(s)
		return err == nil && a.TLS
	})
	if needed && c.TLS.CertFile == "" && c.TLS.KeyFile == "" {
		errs = append(errs, &problem{key: "tls", msg: "listen has a tls:// address, which needs taskd's certificate: " +
			"set tls.cert_file and tls.key_file (docs/security.md)"})
	}
	if len(errs) == 0 && c.TLS.Configured() {
		_, more := c.TLS.load()
		errs = append(errs, more...)
	}
	return errs
}
