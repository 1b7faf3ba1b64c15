//go:build unix

package worker

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/taskd-dev/taskd/internal/lease"
	"github.com/taskd-dev/taskd/internal/wire"
)

// rawFD reads and writes a blocking descriptor with plain read(2) and write(2): cheaper
// than Go's netpoller when one goroutine waits for one input (BenchmarkPipe). A Read
// blocked on it cannot be interrupted by closing it; for a socket, stopReading
// (shutdown(SHUT_RD)) does. Read and Write may be used by one goroutine each at a time.
type rawFD struct {
	fd     int
	closed atomic.Bool
}

func (f *rawFD) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(f.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (f *rawFD) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := unix.Write(f.fd, p[written:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return written, err
		}
		written += n
	}
	return written, nil
}

func (f *rawFD) stopReading() { _ = unix.Shutdown(f.fd, unix.SHUT_RD) }

func (f *rawFD) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	return unix.Close(f.fd)
}

// interruptible reports whether closing in interrupts a Read blocked on it.
func interruptible(in io.Reader) bool {
	_, raw := in.(*rawFD)
	return !raw
}

// control is the worker's end of taskd's lease control socket (SOCK_SEQPACKET, one JSON
// object per packet). One goroutine reads it (read); send is safe for concurrent use.
type control struct {
	fd       int
	mu       sync.Mutex // serialises sends
	stopping atomic.Bool
}

// maxControlPacket is the largest control packet the design allows.
const maxControlPacket = 4096

// read is the control reader goroutine: it hands leases, ends and cancels to s, and
// closes s (exit, as at EOF on stdin) when taskd closes its end. It returns after stop.
func (c *control) read(s *server, done chan struct{}) {
	defer close(done)
	buf := make([]byte, maxControlPacket+1)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, flags, _, err := unix.Recvmsg(c.fd, buf, oob, recvFlags)
		if err == unix.EINTR {
			continue
		}
		if err != nil || (n == 0 && oobn == 0) {
			if !c.stopping.Load() {
				if err != nil {
					s.log.Warn("worker: reading taskd's control socket; exiting", zap.Error(err))
				}
				s.close() // taskd is gone: exit as at EOF on stdin
			}
			return
		}
		fds := lease.Rights(oob[:oobn])
		for _, fd := range fds {
			unix.CloseOnExec(fd) // where MSG_CMSG_CLOEXEC is missing
		}
		if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			s.log.Warn("worker: ignoring a truncated control packet from taskd")
			closeFDs(fds)
			continue
		}
		m, err := wire.DecodeWorkerMsg(bytes.TrimSpace(buf[:n]))
		if err != nil {
			s.log.Warn("worker: ignoring a malformed control packet from taskd", zap.Error(err))
			closeFDs(fds)
			continue
		}
		var conn leaseConn
		if len(fds) > 0 {
			if m.T == tLease {
				conn = newLeaseConn(fds[0], s.log)
				fds = fds[1:]
			}
			closeFDs(fds)
		}
		s.controlMsg(m, conn)
	}
}

// newLeaseConn makes a received lease socket blocking (taskd's copy may have made the shared
// file description non-blocking) and wraps it.
func newLeaseConn(fd int, log *zap.Logger) leaseConn {
	if err := unix.SetNonblock(fd, false); err != nil {
		log.Warn("worker: making a lease socket blocking", zap.Error(err))
	}
	return &rawFD{fd: fd}
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func (c *control) send(msg []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		_, err := unix.SendmsgN(c.fd, msg, nil, nil, unix.MSG_NOSIGNAL)
		if err != unix.EINTR {
			return err
		}
	}
}

// stop makes read return.
func (c *control) stop() {
	c.stopping.Store(true)
	_ = unix.Shutdown(c.fd, unix.SHUT_RD)
}

// leaseEndpoints reads TASKD_CONTROL_FD and TASKD_STATS_FD and checks them: a
// SOCK_SEQPACKET socket and a descriptor that maps 4096 bytes. Both are made close-on-exec
// and the variables are removed from the environment, so that no child process takes them
// for its own. If either is missing or unusable it returns nils (the worker then does not
// announce leases; taskd relays its calls over stdin) and, unless neither variable was
// set, an error saying why, for the log.
func leaseEndpoints() (*control, *statsPage, error) {
	cv, sv := os.Getenv("TASKD_CONTROL_FD"), os.Getenv("TASKD_STATS_FD")
	if cv == "" && sv == "" {
		return nil, nil, nil
	}
	os.Unsetenv("TASKD_CONTROL_FD")
	os.Unsetenv("TASKD_STATS_FD")
	return openLeaseEndpoints(cv, sv)
}

func openLeaseEndpoints(cv, sv string) (*control, *statsPage, error) {
	cfd, err := parseFD("TASKD_CONTROL_FD", cv)
	if err != nil {
		return nil, nil, err
	}
	sfd, err := parseFD("TASKD_STATS_FD", sv)
	if err != nil {
		return nil, nil, err
	}
	unix.CloseOnExec(cfd)
	unix.CloseOnExec(sfd)
	typ, err := unix.GetsockoptInt(cfd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_SEQPACKET {
		return nil, nil, fmt.Errorf("TASKD_CONTROL_FD=%d is not a SOCK_SEQPACKET socket (type %d, %v)", cfd, typ, err)
	}
	if err := unix.SetNonblock(cfd, false); err != nil {
		return nil, nil, fmt.Errorf("TASKD_CONTROL_FD=%d: %w", cfd, err)
	}
	stats, err := mapStats(sfd)
	unix.Close(sfd) // the mapping stays
	if err != nil {
		return nil, nil, fmt.Errorf("TASKD_STATS_FD=%d: %w", sfd, err)
	}
	return &control{fd: cfd}, stats, nil
}

func parseFD(name, v string) (int, error) {
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return 0, fmt.Errorf("%s=%q: want a descriptor number of 3 or more", name, v)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("%s=%d: %w", name, fd, err)
	}
	return fd, nil
}

// mapStats maps the stats page read-write and shared.
func mapStats(fd int) (*statsPage, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Size < statsSize {
		return nil, fmt.Errorf("is %d bytes, want %d", st.Size, statsSize)
	}
	mem, err := unix.Mmap(fd, 0, statsSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return newStatsPage(mem), nil
}
