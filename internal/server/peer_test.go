package server

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

func TestPeerOf(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	require.NoError(t, err)
	defer ln.Close()
	c, err := net.Dial("unix", filepath.Join(dir, "s"))
	require.NoError(t, err)
	defer c.Close()
	s, err := ln.Accept()
	require.NoError(t, err)
	defer s.Close()
	p := peerOf(s)
	assert.True(t, p.Unix)
	assert.Equal(t, os.Getpid(), p.PID)
	assert.Equal(t, os.Getuid(), p.UID)
	assert.Equal(t, os.Getgid(), p.GID)
	assert.NotEmpty(t, p.Comm)
	assert.True(t, p.Admin(), "taskd's own user")
	assert.Contains(t, p.String(), "pid ")

	tl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer tl.Close()
	tc, err := net.Dial("tcp", tl.Addr().String())
	require.NoError(t, err)
	defer tc.Close()
	ts, err := tl.Accept()
	require.NoError(t, err)
	defer ts.Close()
	p = peerOf(ts)
	assert.False(t, p.Unix)
	assert.Equal(t, tc.LocalAddr().String(), p.Addr)
	assert.Equal(t, -1, p.UID)
	assert.False(t, p.Admin(), "a TCP peer cannot be told apart")
	assert.Equal(t, "tcp "+p.Addr, p.String())
}

// TestPeerOfTLS: a TLS peer is known by the names of its verified client certificate.
func TestPeerOfTLS(t *testing.T) {
	ca := taskdtest.NewCA(t, "peer")
	srvCert, srvKey := ca.Issue(t, taskdtest.ServerLeaf("srv"))
	cliCert, cliKey := ca.Issue(t, taskdtest.Leaf{Name: "cli", Client: true, SANs: []string{"app.example.org", "spiffe://example.org/app"}})
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	require.NoError(t, err)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	cliTLS := taskdtest.ClientTLS(t, ca, cliCert, cliKey)
	done := make(chan error, 1)
	go func() {
		c, err := tls.Dial("tcp", ln.Addr().String(), cliTLS)
		if err == nil {
			_, err = c.Read(make([]byte, 1)) // until the server closes
			c.Close()
		}
		done <- err
	}()
	raw, err := ln.Accept()
	require.NoError(t, err)
	sc := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert})
	require.NoError(t, sc.Handshake())
	p := peerOf(sc)
	sc.Close()
	<-done
	assert.True(t, p.TLS)
	assert.False(t, p.Unix)
	assert.Equal(t, []string{"app.example.org", "spiffe://example.org/app"}, p.TLSNames)
	assert.Equal(t, "tls "+p.Addr+" (app.example.org, spiffe://example.org/app)", p.String())
	assert.False(t, p.Admin(), "a TLS peer is not admin")
	assert.Nil(t, Peer{TLS: true}.TLSNames)
	assert.Equal(t, "tls 10.0.0.1:5", Peer{TLS: true, Addr: "10.0.0.1:5"}.String())
}
