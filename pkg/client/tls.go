package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
)

// TLS to a tls:// address (or to a tcp:// one with Config.TLS set, for a TLS-terminating
// proxy): the handshake happens in the dial, and its failures get a text that says what
// to change, while still matching the crypto/tls and crypto/x509 errors they wrap.

// usesTLS reports whether the Client speaks TLS to taskd.
func (c *Client) usesTLS() bool {
	return c.addr.Network == "tcp" && (c.addr.TLS || c.cfg.TLS != nil)
}

// tlsError explains err, an error of a TLS dial or of the first reads after it, if it
// is about TLS; other errors are returned as they are.
func (c *Client) tlsError(err error) error {
	if err == nil || !c.usesTLS() {
		return err
	}
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	var op *net.OpError
	var hint string
	switch {
	case errors.As(err, &host):
		hint = "taskd's certificate is not valid for the name dialled: set Config.TLS.ServerName (taskctl --tls-server-name) to a name in the certificate, or dial one"
	case errors.As(err, &unknown), errors.As(err, &invalid), errors.As(err, &verify):
		hint = "taskd's certificate is not trusted: set Config.TLS.RootCAs to the CA that signed it (taskctl --tls-ca)"
	case errors.As(err, &header):
		hint = "taskd does not speak TLS at this address: use a tls:// address of taskd, or tcp:// (without Config.TLS) for a plain loopback listener"
	case errors.As(err, &op) && op.Op == "remote error":
		hint = "taskd refused the TLS handshake: if it requires client certificates (tls.client_ca_file), give one signed by that CA in " +
			"Config.TLS.Certificates (taskctl --tls-cert and --tls-key); a version below taskd's tls.min_version is refused too"
	default:
		return err
	}
	return &wrapped{text: fmt.Sprintf("TLS with taskd at %s failed: %v; %s", c.cfg.Addr, err, hint), errs: []error{err}}
}
