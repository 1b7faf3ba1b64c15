package fdio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// unixPair returns both ends of a connected unix stream socket.
func unixPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	require.NoError(t, err)
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	a, err := net.Dial("unix", ln.Addr().String())
	require.NoError(t, err)
	r := <-ch
	require.NoError(t, r.err)
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a, r.c
}

func TestReaderIsRawForPipesAndSockets(t *testing.T) {
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pr.Close()
	defer pw.Close()
	a, _ := unixPair(t)
	for name, r := range map[string]io.Reader{"pipe": pr, "unix": a} {
		_, raw := NewReader(r).(*Reader)
		assert.True(t, raw, "%s: want the raw reader", name)
	}
	// No descriptor, or a blocking one (the runtime does not poll it): the reader itself.
	br := strings.NewReader("x")
	assert.Same(t, br, NewReader(br).(*strings.Reader))
	f, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer f.Close()
	assert.Same(t, f, NewReader(f).(*os.File), "a regular file is blocking: no raw reads")
}

// TestReaderStream reads everything written, in order, in pieces of any size, then EOF.
func TestReaderStream(t *testing.T) {
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pr.Close()
	want := bytes.Repeat([]byte("0123456789abcdef\n"), 50000) // larger than a pipe's buffer
	go func() {
		for b := want; len(b) > 0; {
			n := min(len(b), 4093)
			if _, err := pw.Write(b[:n]); err != nil {
				break
			}
			b = b[n:]
		}
		pw.Close()
	}()
	got, err := io.ReadAll(NewReader(pr))
	require.NoError(t, err) // ReadAll turns io.EOF into nil
	assert.Equal(t, len(want), len(got))
	assert.True(t, bytes.Equal(want, got))
}

func TestReaderWaitsAndEndsOnClose(t *testing.T) {
	a, b := unixPair(t)
	r := NewReader(b)
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, 8)
		n, err := r.Read(buf)
		if err == nil && string(buf[:n]) != "hi" {
			err = errors.New("read " + string(buf[:n]))
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond) // the reader is waiting in the poller by now
	_, err := a.Write([]byte("hi"))
	require.NoError(t, err)
	require.NoError(t, <-got)

	go func() { _, err := r.Read(make([]byte, 8)); got <- err }()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, b.Close()) // Close wakes a waiting reader, as for the conn's own Read
	err = <-got
	assert.ErrorIs(t, err, net.ErrClosed)
}

func TestReaderDeadline(t *testing.T) {
	_, b := unixPair(t)
	r := NewReader(b)
	require.NoError(t, b.SetReadDeadline(time.Now().Add(10*time.Millisecond)))
	_, err := r.Read(make([]byte, 8))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
}

func TestReaderEOF(t *testing.T) {
	a, b := unixPair(t)
	r := NewReader(b)
	require.NoError(t, a.Close())
	n, err := r.Read(make([]byte, 8))
	assert.Equal(t, 0, n)
	assert.ErrorIs(t, err, io.EOF)
}

func TestWriteReturnsEAGAINWhenFull(t *testing.T) {
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pr.Close()
	defer pw.Close()
	raw, ok := Raw(pw)
	require.True(t, ok)
	chunk := bytes.Repeat([]byte{'x'}, 64<<10)
	total := 0
	var werr error
	require.NoError(t, raw.Write(func(fd uintptr) bool {
		for {
			n, err := Write(fd, chunk)
			total += n
			if err != nil {
				werr = err
				return true
			}
		}
	}))
	assert.ErrorIs(t, werr, syscall.EAGAIN, "a full pipe must not block the thread")
	assert.Greater(t, total, 0)
	n, err := Write(0, nil)
	assert.Equal(t, 0, n)
	assert.NoError(t, err)
}
