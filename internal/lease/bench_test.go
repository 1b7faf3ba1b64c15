package lease

import (
	"io"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/taskd-dev/taskd/internal/fdio"
)

// BenchmarkConnRead compares the client connection's reader with descriptor reception
// (FDReader: recvmsg with room for descriptors on every read) with the plain one it
// replaces on unix sockets (fdio.Reader: read(2)), on 64-byte messages.
func BenchmarkConnRead(b *testing.B) {
	for _, tc := range []struct {
		name string
		make func(*net.UnixConn) io.Reader
	}{
		{"read", func(uc *net.UnixConn) io.Reader { return fdio.NewReader(uc) }},
		{"recvmsg", func(uc *net.UnixConn) io.Reader {
			r, err := NewFDReader(uc)
			if err != nil {
				b.Fatal(err)
			}
			return r
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			x, y, err := Pair(unix.SOCK_STREAM)
			if err != nil {
				b.Fatal(err)
			}
			cx, _ := net.FileConn(x)
			cy, _ := net.FileConn(y)
			x.Close()
			y.Close()
			defer cx.Close()
			defer cy.Close()
			rd := tc.make(cy.(*net.UnixConn))
			msg, buf := make([]byte, 64), make([]byte, 4096)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := cx.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := rd.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
