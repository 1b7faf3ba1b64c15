package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/taskd-dev/taskd/internal/wire"
)

// A Probe is one health check of a running daemon (see Server.Probes).
type Probe struct {
	Name string // what it checks, for the log: "session ping", "pool locks"
	// Check returns nil if the check passed. It returns early with ctx's error when ctx
	// ends, where it can: taking a lock cannot be given up, so a wedged lock blocks it.
	Check func(ctx context.Context) error
}

// Probes returns the daemon's health checks, in the order to run them: a ping through the
// server's own request path (a client session, served by the same code as every accepted
// connection, over a socket pair), then every pool's lock, taken and released. Together
// they prove that taskd still serves requests and that no pool is wedged; systemd's
// watchdog (cmd/taskd) is fed only after all of them pass.
//
// Call it after Run has called ready. Each Check is safe for concurrent use; the session
// ping fails once the server drains (it serves no new connection then).
func (s *Server) Probes() []Probe {
	return []Probe{{Name: "session ping", Check: s.pingSelf}, {Name: "pool locks", Check: func(context.Context) error {
		s.mu.Lock()
		pools := s.allPoolsLocked() // the pools of now: a reload may have changed them
		s.mu.Unlock()
		for _, p := range pools {
			p.Busy() // for its lock: Busy takes and releases it, and does nothing else
		}
		return nil
	}}}
}

// pingSelf opens a session on one end of a socket pair, sends a ping on the other end and
// waits for its pong: the round trip a client's ping makes, from the session's start on.
// Closing its end ends the session, as a client hanging up does.
func (s *Server) pingSelf(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ours, theirs, err := socketPair()
	if err != nil {
		return fmt.Errorf("cannot open a socket pair (out of file descriptors?): %w", err)
	}
	defer ours.Close()
	if !s.serveConn(theirs, false) {
		theirs.Close()
		return errors.New("taskd is draining and serves no new connection")
	}
	// A past deadline ends the write or read below when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = ours.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(what string, err error) error {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	const id = 1
	b, err := wire.AppendClientMsg(nil, &wire.ClientMsg{T: wire.TPing, ID: id})
	if err != nil {
		return err
	}
	if _, err := ours.Write(b); err != nil {
		return fail("sending a ping", err)
	}
	line, err := wire.NewLineReader(ours, 64<<10).ReadLine()
	if err != nil {
		return fail("waiting for the pong", err)
	}
	m, err := wire.DecodeClientMsg(line)
	if err != nil || m.T != wire.TPong || m.ID != id {
		return fmt.Errorf("expected the pong to ping %d, got %s", id, wire.Snippet(line))
	}
	return nil
}

// socketPair returns the two ends of a connected unix stream socket pair.
func socketPair() (net.Conn, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	a, errA := fileConn(fds[0], "health-client")
	b, errB := fileConn(fds[1], "health-session")
	if err := errors.Join(errA, errB); err != nil {
		if a != nil {
			a.Close()
		}
		if b != nil {
			b.Close()
		}
		return nil, nil, err
	}
	return a, b, nil
}

// fileConn turns descriptor fd into a net.Conn, which has a descriptor of its own: fd is
// closed either way.
func fileConn(fd int, name string) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return net.FileConn(f)
}

// Summary returns a one-line summary of the daemon for systemd's STATUS= (what
// `systemctl status` shows): interfaces, live workers, checkouts held and waiting. It is
// safe for concurrent use once Run has called ready, and cheap enough to call every few
// seconds.
func (s *Server) Summary() string {
	var live, idle, held, queued int
	s.mu.Lock()
	pools := s.allPoolsLocked()
	draining := s.draining
	s.mu.Unlock()
	for _, p := range pools {
		ps := p.Stats()
		live, idle, held, queued = live+ps.Live, idle+ps.Idle, held+ps.Busy, queued+ps.Queued
	}
	state := "serving"
	if draining {
		state = "draining"
	}
	return fmt.Sprintf("%s: interfaces %d, workers %d (%d idle), checkouts %d held, %d waiting",
		state, len(s.tab.Load().names), live, idle, held, queued)
}
