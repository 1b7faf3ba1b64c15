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
			m.A = append(json.RawMessage(nil), m.A...) // m aliases the reader's buffer
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
		d.answer(fc, m.Co, m.ID, m.M, m.A)
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

// answer answers call id of checkout co by its method (see fakeDaemon); with co 0 it
// answers one-shot request id instead, as taskd does.
func (d *fakeDaemon) answer(fc *fakeConn, co, id uint64, method string, args json.RawMessage) {
	m := wire.ClientMsg{Co: co, ID: id}
	if co == 0 {
		m.Worker, m.PID = "echo-once", 999
	}
	switch method {
	case "echo":
		m.T, m.R = wire.TOK, args
	case "":
		m.T, m.R = wire.TOK, json.RawMessage(`{"function":`+string(args)+`}`)
	case "raise":
		m.T, m.E = wire.TErr, json.RawMessage(`{"msg":"boom","type":"ValueError","trace":"tb"}`)
	case "lost":
		m.T, m.Code, m.Msg = wire.TLost, wire.CodeWorkerLost, "exit status 3"
	case "timeout":
		m.T, m.Code, m.Msg = wire.TLost, wire.CodeCallTimeout, "killed after call_timeout 1s"
	case "proto":
		m.T, m.Code, m.Msg = wire.TLost, wire.CodeProtocol, `bad line "{x"`
	case "hang":
		return
	default:
		m.T, m.E = wire.TErr, json.RawMessage(`{"msg":"no such method"}`)
	}
	if m.T == wire.TLost && co != 0 {
		m.ID = 0 // a checkout's lost names the checkout only
	}
	fc.send(m)
}

// grant grants checkout request req and returns the checkout's id; a one-shot request is
// not granted but answered with its call's answer (and 0 is returned), as taskd does.
func (d *fakeDaemon) grant(fc *fakeConn, req wire.ClientMsg) uint64 {
	if req.Once {
		d.answer(fc, 0, req.ID, req.M, req.A)
		return 0
	}
	return d.grantTo(fc, req.ID)
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
