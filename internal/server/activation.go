package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/wire"
)

// inherited is a listening socket that taskd did not open: systemd's socket activation
// passed it (cmd/taskd takes it from LISTEN_FDS with go-systemd's activation package).
// systemd owns the socket and its file: taskd neither chmods nor replaces nor unlinks it,
// and closing the listener closes only taskd's descriptor, so that clients queue in the
// socket's backlog while taskd restarts.
type inherited struct {
	name string // LISTEN_FDNAMES entry (the socket unit's FileDescriptorName=, or its name)
	ln   net.Listener
	used bool // matched to an address of `listen`
}

// Inherit gives the server listening sockets that systemd passed to the process (socket
// activation). Call it before Run, at most once; Run owns the files from then on (it
// closes them). Run serves each of them: in place of the address of `listen` it is bound
// to, or, if it is bound to none, in addition to them (logged). A file that is not a
// listening stream socket makes Run fail.
func (s *Server) Inherit(files []*os.File) { s.inherit = files }

// takeInherited turns the files given to Inherit into listeners. On error it closes them
// all.
func (s *Server) takeInherited() ([]*inherited, error) {
	files := s.inherit
	s.inherit = nil
	var out []*inherited
	var errs []error
	for _, f := range files {
		ln, err := fileListener(f)
		f.Close() // the listener has its own descriptor
		if err != nil {
			errs = append(errs, fmt.Errorf("socket %q passed by systemd (LISTEN_FDS): %w; the socket unit must have ListenStream= only", f.Name(), err))
			continue
		}
		out = append(out, &inherited{name: f.Name(), ln: ln})
	}
	if err := errors.Join(errs...); err != nil {
		for _, in := range out {
			in.ln.Close()
		}
		return nil, err
	}
	return out, nil
}

// fileListener returns a listener on a dup of f's descriptor, which must be a listening
// stream socket (net.FileListener would accept a datagram socket, whose Accept fails).
func fileListener(f *os.File) (net.Listener, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var typ, listening int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if typ, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TYPE); serr != nil {
			return
		}
		listening, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	}); err != nil {
		return nil, err
	}
	switch {
	case serr != nil:
		return nil, fmt.Errorf("not a socket (%w)", serr)
	case typ != syscall.SOCK_STREAM:
		return nil, errors.New("not a stream socket")
	case listening == 0:
		return nil, errors.New("not listening")
	}
	return net.FileListener(f)
}

// takeFor returns the inherited listener bound to addr, if there is one, and marks it
// used.
func takeFor(ins []*inherited, addr wire.Addr) net.Listener {
	for _, in := range ins {
		if !in.used && boundTo(in.ln.Addr(), addr) {
			in.used = true
			return in.ln
		}
	}
	return nil
}

// boundTo reports whether a listener's address is addr: the same socket path, or the
// same IP address and port (addr's host resolved).
func boundTo(la net.Addr, addr wire.Addr) bool {
	switch la := la.(type) {
	case *net.UnixAddr:
		return addr.Network == "unix" && filepath.Clean(la.Name) == addr.Address
	case *net.TCPAddr:
		if addr.Network != "tcp" {
			return false
		}
		ta, err := net.ResolveTCPAddr("tcp", addr.Address)
		return err == nil && ta.Port == la.Port && ta.IP.Equal(la.IP)
	}
	return false
}

// extraInherited returns the inherited listeners that no address of `listen` took, after
// checking that taskd may serve them (plain TCP only on loopback: a socket for TLS must
// match a tls:// address), and logs each one.
func (s *Server) extraInherited(ins []*inherited) ([]net.Listener, error) {
	var lns []net.Listener
	for _, in := range ins {
		if in.used {
			continue
		}
		a := in.ln.Addr()
		if ta, ok := a.(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
			return nil, fmt.Errorf("socket %q passed by systemd listens on %s: plain TCP is only allowed on loopback addresses; list it in listen as tls://%s (with the tls key) to serve it with TLS, or change the socket unit's ListenStream=", in.name, ta, ta)
		}
		s.log.Info("serving a socket passed by systemd that is not in listen", zap.String("name", in.name),
			zap.String("addr", a.Network()+":"+a.String()))
		lns = append(lns, in.ln)
	}
	return lns, nil
}
