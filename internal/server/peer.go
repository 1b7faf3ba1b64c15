package server

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"go.uber.org/zap"
)

// Peer is who is at the other end of a client connection, as the kernel says (SO_PEERCRED
// on a unix socket) or as the network does (the remote address of a TCP connection).
// It is taken once, when the connection is accepted, and not changed after. (Name, which
// the client may give in its hello, is kept by the session, not here: it is the client's
// word, not the kernel's.)
type Peer struct {
	Unix bool   // a unix socket: PID, UID, GID and Comm are the kernel's
	PID  int    // 0 if unknown
	UID  int    // -1 if unknown (TCP)
	GID  int    // -1 if unknown (TCP)
	Comm string // the peer process's name (/proc/PID/comm), "" if unknown
	Addr string // the remote address of a TCP connection; "" on a unix socket
	TLS  bool   // a TLS connection (a tls:// listener), its handshake done
	// TLSNames are the SAN DNS names and URIs of the peer's client certificate, verified
	// against tls.client_ca_file; nil without TLS or without a verified certificate.
	TLSNames []string
}

// peerOf identifies the process at the other end of conn. It never fails: what cannot be
// learned is left unknown.
func peerOf(conn net.Conn) Peer {
	p := Peer{UID: -1, GID: -1}
	if uc, isUnix := conn.(*net.UnixConn); isUnix {
		p.Unix = true
		if raw, err := uc.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) {
				if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
					p.PID, p.UID, p.GID = int(cred.Pid), int(cred.Uid), int(cred.Gid)
				}
			})
		}
		if p.PID > 0 {
			if b, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/comm"); err == nil {
				p.Comm = strings.TrimSpace(string(b))
			}
		}
		return p
	}
	if conn.RemoteAddr() != nil {
		p.Addr = conn.RemoteAddr().String()
	}
	if tc, isTLS := conn.(*tls.Conn); isTLS {
		p.TLS = true
		p.TLSNames = tlsNames(tc.ConnectionState())
	}
	return p
}

// tlsNames returns the SAN DNS names and URIs of the client certificate that the handshake
// verified (against tls.client_ca_file), or nil if it verified none.
func tlsNames(st tls.ConnectionState) []string {
	if len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return nil
	}
	leaf := st.VerifiedChains[0][0]
	names := make([]string, 0, len(leaf.DNSNames)+len(leaf.URIs))
	names = append(names, leaf.DNSNames...)
	for _, u := range leaf.URIs {
		names = append(names, u.String())
	}
	if len(names) == 0 {
		return nil
	}
	return names
}

// Admin reports whether the peer may make admin requests (reload, and the ones that steer
// a live daemon): root, or taskd's own user, on a unix socket.
func (p Peer) Admin() bool {
	return p.Unix && (p.UID == 0 || p.UID == os.Getuid())
}

// String describes the peer for logs and errors: "pid 4242 (php-fpm) uid 33",
// "tcp 127.0.0.1:50312", or "tls 10.0.0.7:50312 (spiffe://example.org/web)" with the
// names of its verified client certificate.
func (p Peer) String() string {
	switch {
	case p.TLS && len(p.TLSNames) > 0:
		return "tls " + p.Addr + " (" + strings.Join(p.TLSNames, ", ") + ")"
	case p.TLS:
		return "tls " + p.Addr
	case !p.Unix:
		return "tcp " + p.Addr
	case p.PID == 0:
		return "unix (peer unknown)"
	case p.Comm != "":
		return fmt.Sprintf("pid %d (%s) uid %d", p.PID, p.Comm, p.UID)
	}
	return fmt.Sprintf("pid %d uid %d", p.PID, p.UID)
}

// fields are the peer's log fields.
func (p Peer) fields() []zap.Field {
	if p.TLS {
		return []zap.Field{zap.String("peer", p.Addr), zap.Strings("peer_tls_names", p.TLSNames)}
	}
	if !p.Unix {
		return []zap.Field{zap.String("peer", p.Addr)}
	}
	return []zap.Field{zap.Int("peer_pid", p.PID), zap.Int("peer_uid", p.UID), zap.String("peer_comm", p.Comm)}
}
