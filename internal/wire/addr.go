package wire

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// DefaultAddr is the address taskd listens on and clients dial when none is configured:
// /run/taskd/taskd.sock for root (systemd's RuntimeDirectory), otherwise
// $XDG_RUNTIME_DIR/taskd/taskd.sock, otherwise taskd-UID/taskd.sock under the temp dir.
// Clients try $TASKD_ADDR before this.
func DefaultAddr() string {
	if os.Geteuid() == 0 {
		return "unix:/run/taskd/taskd.sock"
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(dir) {
		return "unix:" + filepath.Join(dir, "taskd", "taskd.sock")
	}
	return "unix:" + filepath.Join(os.TempDir(), fmt.Sprintf("taskd-%d", os.Geteuid()), "taskd.sock")
}

// Addr is a parsed taskd address.
type Addr struct {
	Network string // "unix" or "tcp": the network to dial or listen on (tls:// is "tcp")
	Address string // socket path, or host:port
	// TLS is set for a tls://host:port address: TCP with TLS, which taskd serves on any
	// address and clients must speak (docs/security.md).
	TLS bool
}

func (a Addr) String() string {
	switch {
	case a.Network == "unix":
		return "unix:" + a.Address
	case a.TLS:
		return "tls://" + a.Address
	}
	return "tcp://" + a.Address
}

// IsLoopback reports whether a is a unix socket or a TCP address on a loopback interface.
// A host name other than "localhost" is not loopback: it is not resolved here.
func (a Addr) IsLoopback() bool {
	if a.Network == "unix" {
		return true
	}
	host, _, err := net.SplitHostPort(a.Address)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ParseAddr parses "unix:/abs/path", "unix:///abs/path", "tcp://host:port" or
// "tls://host:port".
func ParseAddr(s string) (Addr, error) {
	switch {
	case strings.HasPrefix(s, "unix://"):
		return unixAddr(s, strings.TrimPrefix(s, "unix://"))
	case strings.HasPrefix(s, "unix:"):
		return unixAddr(s, strings.TrimPrefix(s, "unix:"))
	case strings.HasPrefix(s, "tcp://"):
		hp := strings.TrimPrefix(s, "tcp://")
		_, port, err := net.SplitHostPort(hp)
		if err != nil || port == "" {
			return Addr{}, fmt.Errorf("address %q: want tcp://host:port", s)
		}
		return Addr{Network: "tcp", Address: hp}, nil
	case strings.HasPrefix(s, "tls://"):
		hp := strings.TrimPrefix(s, "tls://")
		_, port, err := net.SplitHostPort(hp)
		if err != nil || port == "" {
			return Addr{}, fmt.Errorf("address %q: want tls://host:port", s)
		}
		return Addr{Network: "tcp", Address: hp, TLS: true}, nil
	}
	return Addr{}, fmt.Errorf("address %q: want unix:/absolute/path.sock, tcp://host:port or tls://host:port", s)
}

func unixAddr(orig, path string) (Addr, error) {
	if !filepath.IsAbs(path) {
		return Addr{}, fmt.Errorf("address %q: a unix socket path must be absolute (unix:/run/taskd/taskd.sock)", orig)
	}
	return Addr{Network: "unix", Address: filepath.Clean(path)}, nil
}
