package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/crash"
	"github.com/taskd-dev/taskd/internal/wire"
)

// TLS for tls:// listeners. Each accepted connection does its handshake on a goroutine of
// its own, bounded by handshakeTimeout, so that a slow or plaintext client never holds up
// the accept loop; a connection becomes a session only once its handshake is done. The
// certificate and client CAs come from the tls key's files, read again by every reload
// and swapped in whole (tlsServing.cur): new connections get the new ones, connections
// already open keep what they were made with.

// handshakeTimeout bounds a TLS handshake, from accept to its end.
const handshakeTimeout = 10 * time.Second

// handshakeLogEvery is how often a failed handshake is logged at info level; those in
// between are logged at debug level and counted in the next info line (and always in the
// metrics), so that a scanner or a misconfigured fleet cannot flood the log.
const handshakeLogEvery = time.Second

// tlsListener marks a listener of a tls:// address: its connections are raw TCP, to be
// handshaken by Server.handshake.
type tlsListener struct{ net.Listener }

// Why a handshake failed: the reason label of taskd_tls_handshake_failures_total.
const (
	failNotTLS     = iota // the client did not speak TLS (a plaintext client)
	failTimeout           // no handshake within handshakeTimeout
	failClientCert        // no client certificate, or one client_ca_file did not sign
	failVersion           // no TLS version in common (min_version)
	failRemote            // the client refused (it does not trust taskd's certificate, ...)
	failOther
	numFailReasons
)

var failReasonNames = [numFailReasons]string{"not_tls", "timeout", "client_cert", "version", "refused_by_client", "other"}

// tlsServing is the TLS of a daemon's tls:// listeners. Safe for concurrent use.
type tlsServing struct {
	log    *zap.Logger
	server *tls.Config                // hands out cur on each handshake
	cur    atomic.Pointer[tls.Config] // the config of new connections: swapped by set

	failures   [numFailReasons]atomic.Uint64
	lastLog    atomic.Int64 // unix nanoseconds of the last info-level failure line
	suppressed atomic.Uint64
	expiry     *prometheus.Desc
	failDesc   *prometheus.Desc
}

func newTLSServing(f *config.TLSFiles, log *zap.Logger) *tlsServing {
	t := &tlsServing{log: log,
		failDesc: prometheus.NewDesc("taskd_tls_handshake_failures_total",
			"TLS handshakes on tls:// listeners that failed, by reason (not_tls, timeout, client_cert, version, refused_by_client, other).",
			[]string{"reason"}, nil),
		expiry: prometheus.NewDesc("taskd_tls_certificate_expiry_timestamp_seconds",
			"When the certificate taskd serves on its tls:// listeners expires (Unix time; read again on reload).", nil, nil),
	}
	t.server = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return t.cur.Load(), nil }}
	t.set(f)
	return t
}

// set makes f's certificate, client CAs and minimum version those of new connections.
// Session resumption is off: a resumed session would skip verifying the client's
// certificate against the client CAs of now (a CA dropped by a reload would still let its
// clients in), and clients keep their connection for long anyway.
func (t *tlsServing) set(f *config.TLSFiles) {
	c := &tls.Config{Certificates: []tls.Certificate{f.Cert}, MinVersion: f.MinVersion, SessionTicketsDisabled: true}
	if f.ClientCAs != nil {
		c.ClientCAs, c.ClientAuth = f.ClientCAs, tls.RequireAndVerifyClientCert
	}
	t.cur.Store(c)
	if leaf := f.Cert.Leaf; leaf != nil {
		t.log.Info("TLS certificate loaded", zap.String("subject", leaf.Subject.String()),
			zap.Strings("dns_names", leaf.DNSNames), zap.Time("not_after", leaf.NotAfter),
			zap.Bool("client_certificates_required", f.ClientCAs != nil))
	}
}

// serveTLS returns the TLS of a daemon whose tls key is t: nil if t has no certificate.
func serveTLS(t config.TLS, log *zap.Logger) (*tlsServing, error) {
	if !t.Configured() {
		return nil, nil
	}
	files, err := t.Load()
	if err != nil {
		return nil, err
	}
	return newTLSServing(files, log.Named("tls")), nil
}

// listenTCP listens on a tcp:// or tls:// address: plain TCP on loopback only.
func (s *Server) listenTCP(addr wire.Addr) (net.Listener, error) {
	switch {
	case !addr.IsLoopback() && !addr.TLS:
		return nil, fmt.Errorf("plain TCP is only allowed on loopback addresses (127.0.0.1, ::1, localhost); use tls://%s with the tls key", addr.Address)
	case addr.TLS && s.tls == nil:
		return nil, errors.New("a tls:// address needs tls.cert_file and tls.key_file")
	}
	return net.Listen("tcp", addr.Address)
}

// secure returns ln as it is, or, for a tls:// address, marked for TLS (tlsListener).
func (s *Server) secure(ln net.Listener, addr wire.Addr) net.Listener {
	if addr.TLS {
		return &tlsListener{ln}
	}
	return ln
}

// loadTLS reads the tls key's files of cfg for a reload: nil if the daemon serves no TLS.
func (s *Server) loadTLS(cfg *config.Config) (*config.TLSFiles, error) {
	if s.tls == nil || !cfg.TLS.Configured() {
		return nil, nil // no tls:// listener (listen needs a restart); or none left in the file
	}
	return cfg.TLS.Load()
}

// serveAccepted serves conn, accepted on ln: as a session at once, or, on a tls://
// listener, once its handshake is done on a goroutine of its own, so that a slow client
// holds up no other.
func (s *Server) serveAccepted(ln net.Listener, conn net.Conn) {
	if _, isTLS := ln.(*tlsListener); isTLS {
		s.handshake(conn)
	} else if !s.serveConn(conn, true) {
		conn.Close()
	}
}

// handshake serves a connection accepted on a tls:// listener: on a goroutine of the
// server's (Server.wg), it does the TLS handshake and then serves the session. A draining
// server takes no new connection; a shutdown interrupts a handshake under way (s.halt).
func (s *Server) handshake(raw net.Conn) {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		raw.Close()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer crash.OnPanic(s.log, "tls handshake")
		conn := tls.Server(raw, s.tls.server)
		ctx, cancel := context.WithTimeout(s.halt, handshakeTimeout)
		err := conn.HandshakeContext(ctx)
		timedOut := ctx.Err() != nil
		cancel()
		switch {
		case err != nil && s.halt.Err() != nil:
			raw.Close() // interrupted by the shutdown: not the client's failure
			return
		case err != nil:
			s.tls.failed(raw, err, timedOut)
			return
		}
		if !s.serveConn(conn, true) {
			conn.Close()
		}
	}()
}

// failed counts and logs a failed handshake on raw, and closes raw, cleanly (below). A
// client that spoke the client protocol in plaintext (its first byte opens a JSON object)
// is told so in a fatal message before the close.
func (t *tlsServing) failed(raw net.Conn, err error, timedOut bool) {
	defer raw.Close()
	reason := failReason(err, timedOut)
	t.failures[reason].Add(1)
	fields := []zap.Field{zap.String("peer", raw.RemoteAddr().String()), zap.String("reason", failReasonNames[reason]), zap.Error(err)}
	now, last := time.Now().UnixNano(), t.lastLog.Load()
	if now-last >= int64(handshakeLogEvery) && t.lastLog.CompareAndSwap(last, now) {
		t.log.Info("TLS handshake failed; connection closed", append(fields, zap.Uint64("earlier_not_logged", t.suppressed.Swap(0)))...)
	} else {
		t.suppressed.Add(1)
		t.log.Debug("TLS handshake failed; connection closed", fields...)
	}
	if reason == failTimeout {
		return
	}
	// A clean close: what the client is owed (a TLS alert, which crypto/tls has sent, or
	// the message below), then a FIN, reading what it sent on meanwhile, so that the close
	// is not a reset that may lose what it was sent (a TLS 1.3 client learns that its
	// certificate was refused only from the alert, after its own writes).
	_ = raw.SetDeadline(time.Now().Add(time.Second))
	var rhe tls.RecordHeaderError
	if errors.As(err, &rhe) && rhe.Conn != nil && rhe.RecordHeader[0] == '{' {
		line, _ := wire.AppendClientMsg(nil, &wire.ClientMsg{T: wire.TFatal, Msg: "this is a TLS port of taskd: " +
			"connect with TLS (address tls://HOST:PORT; pkg/client Config.TLS; taskctl --tls-ca, --tls-cert, --tls-key)"})
		_, _ = raw.Write(line)
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(raw, 64<<10))
}

// failReason classifies a handshake error.
func failReason(err error, timedOut bool) int {
	var rhe tls.RecordHeaderError
	var cve *tls.CertificateVerificationError
	var ne net.Error
	var oe *net.OpError
	msg := err.Error()
	switch {
	case errors.As(err, &rhe):
		return failNotTLS
	case timedOut || (errors.As(err, &ne) && ne.Timeout()):
		return failTimeout
	case errors.As(err, &cve) || strings.Contains(msg, "didn't provide a certificate"):
		return failClientCert
	case strings.Contains(msg, "unsupported versions") || strings.Contains(msg, "protocol version"):
		return failVersion
	case errors.As(err, &oe) && oe.Op == "remote error":
		return failRemote
	}
	return failOther
}

// Describe and Collect make tlsServing a Prometheus collector of its metrics.
func (t *tlsServing) Describe(ch chan<- *prometheus.Desc) {
	ch <- t.failDesc
	ch <- t.expiry
}

func (t *tlsServing) Collect(ch chan<- prometheus.Metric) {
	for r := range numFailReasons {
		ch <- prometheus.MustNewConstMetric(t.failDesc, prometheus.CounterValue, float64(t.failures[r].Load()), failReasonNames[r])
	}
	if c := t.cur.Load(); len(c.Certificates) > 0 && c.Certificates[0].Leaf != nil {
		ch <- prometheus.MustNewConstMetric(t.expiry, prometheus.GaugeValue, float64(c.Certificates[0].Leaf.NotAfter.Unix()))
	}
}
