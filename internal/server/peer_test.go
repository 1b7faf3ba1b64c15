package server

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
