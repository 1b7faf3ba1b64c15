// Command leaseworker is a minimal worker that speaks worker protocol v1 and its
// direct-lease extension (docs/worker-protocol.md, "Direct leases") with plain system
// calls on one goroutine: the floor of the benchmark, and the lease-speaking worker of
// the tests while the SDKs learn leases. It reads stdin, its control channel and the
// lease it holds with poll(2), answers calls in order on the stream they came from, and
// publishes each call in its stats page.
//
// It announces "pipeline" and applies the ep rule, and announces "lease" when it was given
// a usable control channel and stats page, unless LEASEWORKER_NO_LEASE is set (a worker
// that does not speak leases, for the fallback tests). With LEASEWORKER_SLOW_LEASE_MS=N it
// is a slow reader of its lease that finishes what it read: it waits N ms before reading
// a lease that has data, then runs the calls it read before it looks at control (an "end"
// that came meanwhile waits for them), as the protocol allows. With LEASEWORKER_HANG_END
// set it never answers "end" (a done hook that hangs), for the tests of taskd's bound on
// ending a lease. Methods: echo and "" (return the
// arguments), fail [msg] (err TestError), pid, sleep [ms] (returns ms), spin (never
// returns), log [msg] (one log record), lease (the number of the lease the
// call came on, 0 for stdin), dones (done hooks run so far), bye (asks to be retired on
// the stream's channel: control for a lease, stdout otherwise, then answers).
// It reads between calls only: a cancel is seen after the call it names.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taskd-dev/taskd/internal/lease"
)

// hangEnd: LEASEWORKER_HANG_END is set.
var hangEnd = os.Getenv("LEASEWORKER_HANG_END") != ""

type msg struct {
	T  string            `json:"t"`
	ID uint64            `json:"id"`
	M  string            `json:"m"`
	A  []json.RawMessage `json:"a"`
	Ep *uint64           `json:"ep"`
}

// stream is one input: stdin or a lease.
type stream struct {
	fd  int
	out int // where replies go
	buf []byte
	eof bool
}

// line returns the next whole line buffered, if any.
func (s *stream) line() ([]byte, bool) {
	i := bytes.IndexByte(s.buf, '\n')
	if i < 0 {
		return nil, false
	}
	l := s.buf[:i]
	s.buf = s.buf[i+1:]
	return l, true
}

// fill reads what is there (one read); it marks EOF.
func (s *stream) fill() {
	var tmp [64 << 10]byte
	n, err := unix.Read(s.fd, tmp[:])
	if err == unix.EINTR || err == unix.EAGAIN {
		return
	}
	if n <= 0 {
		s.eof = true
		return
	}
	s.buf = append(s.buf, tmp[:n]...)
}

type worker struct {
	ctl     int // -1: none
	page    *lease.Page
	stdin   stream
	cur     *stream // the lease held, or nil
	leaseID uint64
	errs    uint64 // err replies since the last done hook (the ep rule)
	dones   int
	slow    time.Duration // LEASEWORKER_SLOW_LEASE_MS
}

func main() {
	w := &worker{ctl: -1, stdin: stream{fd: 0, out: 1}}
	if ms, err := strconv.Atoi(os.Getenv("LEASEWORKER_SLOW_LEASE_MS")); err == nil {
		w.slow = time.Duration(ms) * time.Millisecond
	}
	announce := w.setup() && os.Getenv("LEASEWORKER_NO_LEASE") == ""
	ready := `{"t":"ready","v":1,"pipeline":true}`
	if announce {
		ready = `{"t":"ready","v":1,"pipeline":true,"lease":1}`
	}
	writeAll(1, []byte(ready+"\n"))
	os.Exit(w.loop())
}

// setup takes the control channel and the stats page if both are there and usable.
func (w *worker) setup() bool {
	cfd, err1 := strconv.Atoi(os.Getenv(lease.EnvControlFD))
	sfd, err2 := strconv.Atoi(os.Getenv(lease.EnvStatsFD))
	if err1 != nil || err2 != nil {
		return false
	}
	if typ, err := unix.GetsockoptInt(cfd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_SEQPACKET {
		return false
	}
	p, err := lease.Map(sfd, true)
	if err != nil {
		return false
	}
	unix.CloseOnExec(cfd)
	unix.Close(sfd) // the mapping stays
	p.Init()
	w.ctl, w.page = cfd, p
	return true
}

func (w *worker) loop() int {
	for {
		// A lease's line first, then stdin's: one call, then look at control again
		// (an "end" must stop the lease before its next buffered call). With nothing
		// buffered, poll looks at control too: no system call of its own then.
		slowRead := w.slow > 0 && w.cur != nil && bytes.IndexByte(w.cur.buf, '\n') >= 0
		if !slowRead && w.buffered() && !w.control(false) {
			return 0
		}
		if w.cur != nil {
			if l, ok := w.cur.line(); ok {
				w.handle(w.cur, l)
				continue
			}
		}
		if l, ok := w.stdin.line(); ok {
			w.handle(&w.stdin, l)
			continue
		}
		if w.stdin.eof {
			return 0
		}
		fds := []unix.PollFd{{Fd: 0, Events: unix.POLLIN}}
		if w.ctl >= 0 {
			fds = append(fds, unix.PollFd{Fd: int32(w.ctl), Events: unix.POLLIN})
		}
		li := -1
		if w.cur != nil && !w.cur.eof {
			li = len(fds)
			fds = append(fds, unix.PollFd{Fd: int32(w.cur.fd), Events: unix.POLLIN})
		}
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			return 1
		}
		if fds[0].Revents != 0 {
			w.stdin.fill()
		}
		if li >= 0 && fds[li].Revents != 0 {
			if w.slow > 0 {
				time.Sleep(w.slow)
				w.cur.fill()
				continue // its calls first
			}
			w.cur.fill()
		}
		if w.ctl >= 0 && fds[1].Revents != 0 && !w.control(true) {
			return 0
		}
	}
}

// buffered reports whether a whole line is waiting in a stream's buffer.
func (w *worker) buffered() bool {
	return bytes.IndexByte(w.stdin.buf, '\n') >= 0 || (w.cur != nil && bytes.IndexByte(w.cur.buf, '\n') >= 0)
}

// control handles the control packets waiting (waiting for one if block); false means
// taskd is gone (EOF on control: exit).
func (w *worker) control(block bool) bool {
	if w.ctl < 0 {
		return true
	}
	buf, oob := make([]byte, lease.MaxPacket), make([]byte, unix.CmsgSpace(4))
	for {
		flags := unix.MSG_DONTWAIT | unix.MSG_CMSG_CLOEXEC
		if block {
			flags &^= unix.MSG_DONTWAIT
			block = false
		}
		n, oobn, _, _, err := unix.Recvmsg(w.ctl, buf, oob, flags)
		if err == unix.EAGAIN || err == unix.EINTR {
			return true
		}
		if err != nil || n == 0 {
			return false
		}
		var fd = -1
		if oobn > 0 {
			if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(cms) > 0 {
				if fds, err := unix.ParseUnixRights(&cms[0]); err == nil && len(fds) > 0 {
					fd = fds[0]
					for _, extra := range fds[1:] {
						unix.Close(extra)
					}
				}
			}
		}
		m, err := lease.Decode(buf[:n])
		switch {
		case err == nil && m.T == lease.TLease && fd >= 0 && w.cur == nil:
			w.cur, w.leaseID, w.errs = &stream{fd: fd, out: fd}, m.ID, 0
			fd = -1
		case err == nil && m.T == lease.TEnd && w.cur != nil && m.ID == w.leaseID && hangEnd:
			// Never answered: taskd's bound ends it.
		case err == nil && m.T == lease.TEnd && w.cur != nil && m.ID == w.leaseID:
			unix.Close(w.cur.fd) // unread calls are dropped with it
			w.cur = nil
			w.doneHook()
			sendCtl(w.ctl, fmt.Sprintf(`{"t":"ended","id":%d}`, m.ID))
		}
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

func (w *worker) doneHook() { w.dones++; w.errs = 0 }

// handle runs one message of stream s.
func (w *worker) handle(s *stream, line []byte) {
	var m msg
	if json.Unmarshal(line, &m) != nil {
		return
	}
	switch m.T {
	case "done":
		w.doneHook()
		return
	case "call":
	default:
		return // cancel, unknown: nothing to do between calls
	}
	if m.Ep != nil && *m.Ep < w.errs {
		reply(s, fmt.Sprintf(`{"t":"aborted","id":%d}`, m.ID))
		return
	}
	var leaseID uint64
	if s != &w.stdin {
		leaseID = w.leaseID
	}
	if w.page != nil {
		w.page.Begin(m.ID, leaseID, m.M, time.Now())
	}
	r, fail := w.run(s, &m, leaseID)
	if w.page != nil {
		w.page.End(fail)
	}
	if fail {
		w.errs++
		e, _ := json.Marshal(map[string]string{"msg": r, "type": "TestError", "trace": "leaseworker: " + m.M})
		reply(s, fmt.Sprintf(`{"t":"err","id":%d,"e":%s}`, m.ID, e))
		return
	}
	logs := ""
	if m.M == "log" && len(m.A) > 0 {
		logs = fmt.Sprintf(`,"logs":[{"ts":%.3f,"lvl":"info","msg":%s,"f":{}}]`, float64(time.Now().UnixMilli())/1000, m.A[0])
	}
	reply(s, fmt.Sprintf(`{"t":"ok","id":%d,"r":%s%s}`, m.ID, r, logs))
}

func (w *worker) run(s *stream, m *msg, leaseID uint64) (string, bool) {
	num := func() int {
		var n int
		if len(m.A) > 0 {
			_ = json.Unmarshal(m.A[0], &n)
		}
		return n
	}
	switch m.M {
	case "", "echo":
		if m.A == nil {
			return "[]", false
		}
		b, _ := json.Marshal(m.A)
		return string(b), false
	case "fail":
		var msg string
		if len(m.A) == 0 || json.Unmarshal(m.A[0], &msg) != nil {
			msg = "it failed as asked"
		}
		return msg, true
	case "pid":
		return strconv.Itoa(os.Getpid()), false
	case "sleep":
		time.Sleep(time.Duration(num()) * time.Millisecond)
		return strconv.Itoa(num()), false
	case "spin":
		for {
			spins++
		}
	case "log":
		return "true", false
	case "lease":
		return strconv.FormatUint(leaseID, 10), false
	case "dones":
		return strconv.Itoa(w.dones), false
	case "bye":
		if s != &w.stdin && w.ctl >= 0 {
			sendCtl(w.ctl, `{"t":"bye","msg":"asked to retire"}`)
		} else {
			writeAll(1, []byte(`{"t":"bye","msg":"asked to retire"}`+"\n"))
		}
		return `"bye"`, false
	}
	return fmt.Sprintf("unknown method %q", m.M), true
}

var spins uint64 // spin's work, kept so that the loop is not optimised away

// reply writes a reply on s's output; a lease whose client has gone takes none (EPIPE).
func reply(s *stream, line string) { writeAll(s.out, []byte(line+"\n")) }

func sendCtl(fd int, pkt string) { _, _ = unix.Write(fd, []byte(pkt)) }

func writeAll(fd int, b []byte) {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		b = b[n:]
	}
}
