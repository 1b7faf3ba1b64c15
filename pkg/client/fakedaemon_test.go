package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/wire"
)

// fakeDaemon is a test double for taskd speaking docs/client-protocol.md on a unix socket.
// By default it grants every checkout at once and answers calls by method name:
//
//	"echo"   ok with the argument array
//	""       ok with {"function": args}
//	"raise"  err {msg: "boom", type: "ValueError", trace: "tb"}
//	"hang"   no answer
//	"lost"   lost, code worker_lost   ("timeout": call_timeout, "proto": protocol_error)
//
// With hold set, checkouts are recorded but not answered until grant or refuse. A test
// can override the handling of any message with handle.
type fakeDaemon struct {
	t    testing.TB
	path string
	ln   net.Listener
	wg   sync.WaitGroup

	mu      sync.Mutex
	conns   map[*fakeConn]bool
	got     []wire.ClientMsg
	nextCo  uint64
	n       int // the "n" sent in granted; 0 means 1
	hold    bool
	waiting []heldCheckout
	handle  func(fc *fakeConn, m wire.ClientMsg) bool // returns true if it handled m
}

type heldCheckout struct {
	fc  *fakeConn
	id  uint64
	req wire.ClientMsg
}

type fakeConn struct {
	nc  net.Conn
	wmu sync.Mutex
}

func (fc *fakeConn) send(m wire.ClientMsg) {
	b, err := wire.AppendClientMsg(nil, &m)
	if err != nil {
		panic(err)
	}
	fc.sendRaw(string(b))
}

func (fc *fakeConn) sendRaw(s string) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	_, _ = fc.nc.Write([]byte(s))
}

// sockPath returns a short unix socket path in a fresh temp dir (t.TempDir can exceed
// the 108-byte limit of socket paths).
func sockPath(t testing.TB) string {
	dir, err := os.MkdirTemp("", "tc")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "d.sock")
}

func newFakeDaemon(t *testing.T) *fakeDaemon {
	return startFakeDaemon(t, sockPath(t))
}

func startFakeDaemon(t testing.TB, path string) *fakeDaemon {
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	d := &fakeDaemon{t: t, path: path, ln: ln, conns: map[*fakeConn]bool{}}
	d.wg.Add(1)
	go d.accept()
	t.Cleanup(d.stop)
	return d
}

func (d *fakeDaemon) addr() string { return "unix:" + d.path }

func (d *fakeDaemon) stop() {
	d.ln.Close()
	d.dropConns()
	d.wg.Wait()
}

// dropConns closes every connection, as a daemon restart would.
func (d *fakeDaemon) dropConns() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for fc := range d.conns {
		fc.nc.Close()
	}
	d.waiting = nil
}

func (d *fakeDaemon) accept() {
	defer d.wg.Done()
	for {
		nc, err := d.ln.Accept()
		if err != nil {
			return
		}
		fc := &fakeConn{nc: nc}
		d.mu.Lock()
		d.conns[fc] = true
		d.mu.Unlock()
		d.wg.Add(1)
		go d.serve(fc)
	}
}

func (d *fakeDaemon) serve(fc *fakeConn) {
	defer d.wg.Done()
	defer func() {
		d.mu.Lock()
		delete(d.conns, fc)
		d.mu.Unlock()
		fc.nc.Close()
	}()
	lr := wire.NewLineReader(fc.nc, 0)
	for {
		line, err := lr.ReadLine()
		if err != nil {
			return
		}
		m, err := wire.DecodeClientMsg(line)
		if err != nil {
			fc.send(wire.ClientMsg{T: wire.TFatal, Msg: err.Error()})
			return
		}
		d.mu.Lock()
		d.got = append(d.got, m)
		h := d.handle
		d.mu.Unlock()
		if h != nil && h(fc, m) {
			continue
		}
		d.dflt(fc, m)
	}
}

func (d *fakeDaemon) dflt(fc *fakeConn, m wire.ClientMsg) {
	switch m.T {
	case wire.TCheckout:
		d.mu.Lock()
		if d.hold {
			d.waiting = append(d.waiting, heldCheckout{fc, m.ID, m})
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		d.grant(fc, m)
	case wire.TAbandon:
		d.mu.Lock()
		for i, h := range d.waiting {
			if h.fc == fc && h.id == m.ID {
				d.waiting = append(d.waiting[:i], d.waiting[i+1:]...)
				d.mu.Unlock()
				fc.send(wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: wire.CodeAbandoned, Msg: "abandoned"})
				return
			}
		}
		d.mu.Unlock()
	case wire.TCall:
		switch m.M {
		case "echo":
			fc.send(wire.ClientMsg{T: wire.TOK, Co: m.Co, ID: m.ID, R: m.A})
		case "":
			fc.send(wire.ClientMsg{T: wire.TOK, Co: m.Co, ID: m.ID, R: json.RawMessage(`{"function":` + string(m.A) + `}`)})
		case "raise":
			fc.send(wire.ClientMsg{T: wire.TErr, Co: m.Co, ID: m.ID, E: json.RawMessage(`{"msg":"boom","type":"ValueError","trace":"tb"}`)})
		case "lost":
			fc.send(wire.ClientMsg{T: wire.TLost, Co: m.Co, Code: wire.CodeWorkerLost, Msg: "exit status 3"})
		case "timeout":
			fc.send(wire.ClientMsg{T: wire.TLost, Co: m.Co, Code: wire.CodeCallTimeout, Msg: "killed after call_timeout 1s"})
		case "proto":
			fc.send(wire.ClientMsg{T: wire.TLost, Co: m.Co, Code: wire.CodeProtocol, Msg: `bad line "{x"`})
		case "hang":
		default:
			fc.send(wire.ClientMsg{T: wire.TErr, Co: m.Co, ID: m.ID, E: json.RawMessage(`{"msg":"no such method"}`)})
		}
	case wire.TPing:
		fc.send(wire.ClientMsg{T: wire.TPong, ID: m.ID, Version: "9.9.9-test"})
	case wire.TStatus:
		fc.send(wire.ClientMsg{T: wire.TStatus, ID: m.ID, Status: &wire.Status{
			Version: "9.9.9-test", PID: 42,
			Interfaces: []wire.InterfaceStatus{{Name: "echo", Live: 1, Idle: 1,
				Workers: []wire.WorkerStatus{{ID: "echo-1", PID: 43, State: "idle"}}}},
		}})
	}
}

// grant grants checkout request req; a one-shot request's call then runs as call 1, and
// the checkout is released (recorded as a "release" with Msg "once", as taskd does it).
func (d *fakeDaemon) grant(fc *fakeConn, req wire.ClientMsg) uint64 {
	co := d.grantTo(fc, req.ID)
	if req.Once {
		d.dflt(fc, wire.ClientMsg{T: wire.TCall, Co: co, ID: 1, M: req.M, A: req.A})
		d.mu.Lock()
		d.got = append(d.got, wire.ClientMsg{T: wire.TRelease, Co: co, Msg: "once"})
		d.mu.Unlock()
	}
	return co
}

func (d *fakeDaemon) grantTo(fc *fakeConn, id uint64) uint64 {
	d.mu.Lock()
	d.nextCo++
	co := d.nextCo
	n := d.n
	d.mu.Unlock()
	if n == 0 {
		n = 1
	}
	fc.send(wire.ClientMsg{T: wire.TGranted, ID: id, Co: co, Worker: fmt.Sprintf("echo-%d", co), PID: 1000 + int(co), N: n})
	return co
}

// grantNext grants the oldest held checkout.
func (d *fakeDaemon) grantNext() uint64 {
	d.mu.Lock()
	require.NotEmpty(d.t, d.waiting)
	h := d.waiting[0]
	d.waiting = d.waiting[1:]
	d.mu.Unlock()
	return d.grant(h.fc, h.req)
}

func (d *fakeDaemon) setHold(hold bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hold = hold
}

func (d *fakeDaemon) setHandler(h func(fc *fakeConn, m wire.ClientMsg) bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.handle = h
}

func (d *fakeDaemon) numWaiting() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.waiting)
}

// received returns the messages of type typ received so far.
func (d *fakeDaemon) received(typ string) []wire.ClientMsg {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []wire.ClientMsg
	for _, m := range d.got {
		if m.T == typ {
			out = append(out, m)
		}
	}
	return out
}

// waitReceived waits until at least n messages of type typ have arrived and returns them.
func (d *fakeDaemon) waitReceived(typ string, n int) []wire.ClientMsg {
	d.t.Helper()
	require.Eventually(d.t, func() bool { return len(d.received(typ)) >= n }, 5*time.Second, time.Millisecond,
		"waiting for %d %q messages", n, typ)
	return d.received(typ)
}

var errTest = errors.New("test error")
