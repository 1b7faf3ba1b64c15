package server

import (
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/wire"
)

// TestFileListenerWantsAListeningStreamSocket: a descriptor systemd passes that is not a
// listening stream socket is an error at start, not an accept loop that always fails.
func TestFileListenerWantsAListeningStreamSocket(t *testing.T) {
	socket := func(typ int, listen bool) *os.File {
		fd, err := syscall.Socket(syscall.AF_INET, typ|syscall.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		f := os.NewFile(uintptr(fd), "test")
		t.Cleanup(func() { f.Close() })
		require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
		if listen {
			require.NoError(t, syscall.Listen(fd, 8))
		}
		return f
	}
	_, err := fileListener(socket(syscall.SOCK_DGRAM, false))
	assert.ErrorContains(t, err, "not a stream socket")
	_, err = fileListener(socket(syscall.SOCK_STREAM, false))
	assert.ErrorContains(t, err, "not listening")
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	_, err = fileListener(r)
	assert.ErrorContains(t, err, "not a socket")
	ln, err := fileListener(socket(syscall.SOCK_STREAM, true))
	require.NoError(t, err)
	ln.Close()
}

func TestBoundTo(t *testing.T) {
	tcp := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9000}
	tests := []struct {
		la   net.Addr
		addr string
		want bool
	}{
		{&net.UnixAddr{Name: "/run/taskd/taskd.sock", Net: "unix"}, "unix:/run/taskd/taskd.sock", true},
		{&net.UnixAddr{Name: "/run/taskd/taskd.sock", Net: "unix"}, "unix:///run/taskd/../taskd/taskd.sock", true},
		{&net.UnixAddr{Name: "/run/taskd/taskd.sock", Net: "unix"}, "unix:/run/taskd/other.sock", false},
		{&net.UnixAddr{Name: "/run/taskd/taskd.sock", Net: "unix"}, "tcp://127.0.0.1:9000", false},
		{tcp, "tcp://127.0.0.1:9000", true},
		{tcp, "tcp://127.0.0.1:9001", false},
		{tcp, "tcp://[::1]:9000", false},
		{tcp, "unix:/run/taskd/taskd.sock", false},
	}
	for _, tt := range tests {
		addr, err := wire.ParseAddr(tt.addr)
		require.NoError(t, err)
		assert.Equal(t, tt.want, boundTo(tt.la, addr), "%v bound to %s", tt.la, tt.addr)
	}
}
