package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskd-dev/taskd/pkg/client"
)

// opDeadline bounds each caller operation (a one-shot call, or a checkout and its calls):
// longer than a SIGSTOP (call_timeout + 500ms) plus a respawn, so that chaos makes calls
// fail with typed errors rather than run into their deadline.
const opDeadline = 5 * time.Second

// lateBy is how long past its deadline a call may return before it counts as late.
const lateBy = time.Second

// tally counts what the callers saw. Its methods are safe for concurrent use.
type tally struct {
	attempted, succeeded, late, misrouted, duplicated atomic.Int64

	mu       sync.Mutex
	failed   map[string]int64 // by typed error
	untyped  []string         // the first few untyped errors' texts
	nUntyped int64
	answered map[string]bool // nonces answered so far
	records  map[string]bool // nonces of one-shot record calls
	bad      []string        // the first few misrouted or duplicated answers, described

	inflight map[uint64]time.Time // calls in progress: their deadline
	nextID   uint64
	byIface  map[string]*[2]int64 // calls attempted and succeeded, by interface
}

func newTally() *tally {
	return &tally{failed: map[string]int64{}, answered: map[string]bool{}, records: map[string]bool{},
		inflight: map[uint64]time.Time{}, byIface: map[string]*[2]int64{}}
}

// begin records a call (or checkout) about to be made with deadline; end, with its id,
// records that it returned. A call that never ends is lost; one that ends more than
// lateBy after its deadline is late.
func (t *tally) begin(iface string, deadline time.Time) uint64 {
	t.attempted.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.iface(iface)[0]++
	t.nextID++
	t.inflight[t.nextID] = deadline
	return t.nextID
}

// iface returns the counts of an interface. The caller holds mu.
func (t *tally) iface(name string) *[2]int64 {
	n := t.byIface[name]
	if n == nil {
		n = new([2]int64)
		t.byIface[name] = n
	}
	return n
}

func (t *tally) end(id uint64) {
	t.mu.Lock()
	deadline := t.inflight[id]
	delete(t.inflight, id)
	t.mu.Unlock()
	if time.Now().After(deadline.Add(lateBy)) {
		t.late.Add(1)
	}
}

// overdue returns how many calls in progress are more than lateBy past their deadline.
func (t *tally) overdue() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	now := time.Now()
	for _, d := range t.inflight {
		if now.After(d.Add(lateBy)) {
			n++
		}
	}
	return n
}

// fail counts a failed call by its typed error, or as untyped.
func (t *tally) fail(err error) {
	kind := classify(err)
	t.mu.Lock()
	defer t.mu.Unlock()
	if kind == "" {
		t.nUntyped++
		if len(t.untyped) < 5 {
			t.untyped = append(t.untyped, err.Error())
		}
		return
	}
	t.failed[kind]++
}

// answer checks an answer: got must be the nonce sent, answered once.
func (t *tally) answer(sent, got string) bool {
	if got != sent {
		t.misrouted.Add(1)
		t.note(fmt.Sprintf("call with nonce %q answered %q", sent, got))
		return false
	}
	t.mu.Lock()
	dup := t.answered[got]
	t.answered[got] = true
	t.mu.Unlock()
	if dup {
		t.duplicated.Add(1)
		t.note(fmt.Sprintf("nonce %q answered twice", got))
		return false
	}
	t.succeeded.Add(1)
	return true
}

func (t *tally) note(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.bad) < 10 {
		t.bad = append(t.bad, s)
	}
}

// classify names the typed error err matches, most specific first; "" if none.
func classify(err error) string {
	var re *client.RemoteError
	if errors.As(err, &re) {
		return "remote error"
	}
	for _, s := range []struct {
		err  error
		name string
	}{
		{client.ErrCallTimeout, "call timeout"},
		{client.ErrProtocol, "protocol error"},
		{client.ErrWorkerLost, "worker lost"},
		{client.ErrInterfaceRemoved, "interface removed"},
		{client.ErrUnknownInterface, "unknown interface"},
		{client.ErrAborted, "aborted"},
		{client.ErrReleased, "released"},
		{client.ErrClosed, "client closed"},
		{client.ErrInvalidConfig, "invalid config"},
		{client.ErrOverloaded, "overloaded"},
		{client.ErrUnavailable, "unavailable"},
		{client.ErrShuttingDown, "shutting down"},
		{client.ErrUnreachable, "unreachable"},
		{context.DeadlineExceeded, "deadline exceeded"},
	} {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	return ""
}

// caller is one simulated application goroutine.
type caller struct {
	id      int
	t       *tally
	clients map[string]*client.Client // by interface
	names   []string                  // interfaces it uses, weighted by repetition
	rng     *rand.Rand
	seq     int
	prefix  string
	calm    *atomic.Int64 // when chaos stopped (UnixNano), 0 while it runs
	ok      atomic.Int64  // UnixNano of its last success
	firstOK atomic.Int64  // UnixNano of its first success after chaos stopped
}

func (c *caller) nonce() string {
	c.seq++
	return fmt.Sprintf("%s-%d-%d", c.prefix, c.id, c.seq)
}

func (c *caller) succeeded(iface string) {
	c.t.mu.Lock()
	c.t.iface(iface)[1]++
	c.t.mu.Unlock()
	now := time.Now().UnixNano()
	c.ok.Store(now)
	if calm := c.calm.Load(); calm != 0 && now > calm {
		c.firstOK.CompareAndSwap(0, now)
	}
}

// run makes operations until stop is closed.
func (c *caller) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		name := c.names[c.rng.IntN(len(c.names))]
		cl := c.clients[name]
		switch r := c.rng.IntN(100); {
		case r < 35:
			c.oneShot(cl, name, "echo")
		case r < 50:
			c.oneShot(cl, name, "record")
		case r < 75:
			c.held(cl, name, 2+c.rng.IntN(4), false)
		default:
			c.held(cl, name, 2+c.rng.IntN(6), true)
		}
		time.Sleep(time.Duration(c.rng.IntN(5)) * time.Millisecond)
	}
}

// oneShot makes one Client.Call. On leak and flood it calls their method.
func (c *caller) oneShot(cl *client.Client, name, method string) {
	var args []any
	switch name {
	case "leak":
		method, args = "leak", []any{2}
	case "flood":
		method, args = "flood", []any{16}
	}
	n := c.nonce()
	ctx, cancel := context.WithTimeout(context.Background(), opDeadline)
	defer cancel()
	dl, _ := ctx.Deadline()
	id := c.t.begin(name, dl)
	var got string
	err := cl.Call(ctx, method, &got, append([]any{n}, args...)...)
	c.t.end(id)
	if err != nil {
		c.t.fail(err)
		return
	}
	if method == "record" {
		c.t.mu.Lock()
		c.t.records[n] = true
		c.t.mu.Unlock()
	}
	if c.t.answer(n, got) {
		c.succeeded(name)
	}
}

// held checks a worker out and makes calls "who" on it, one after another or pipelined
// (Go, then Wait for each): every call must reach the checkout's worker.
func (c *caller) held(cl *client.Client, name string, calls int, pipelined bool) {
	ctx, cancel := context.WithTimeout(context.Background(), opDeadline)
	defer cancel()
	dl, _ := ctx.Deadline()
	id := c.t.begin(name, dl) // the checkout counts as the first call's attempt
	co, err := cl.Checkout(ctx)
	if err != nil {
		c.t.end(id)
		c.t.fail(err)
		return
	}
	defer co.Release()
	pid := co.Worker().PID
	check := func(n string, raw []json.RawMessage) bool {
		var got string
		var p int
		if len(raw) != 2 || json.Unmarshal(raw[0], &got) != nil || json.Unmarshal(raw[1], &p) != nil {
			c.t.fail(fmt.Errorf("soak: who answered %d values, not [nonce, pid]", len(raw)))
			return false
		}
		if p != pid {
			c.t.misrouted.Add(1)
			c.t.note(fmt.Sprintf("call %q of a checkout of worker pid %d ran in pid %d", n, pid, p))
			return false
		}
		if !c.t.answer(n, got) {
			return false
		}
		c.succeeded(name)
		return true
	}
	if !pipelined {
		for i := range calls {
			if i > 0 {
				id = c.t.begin(name, dl)
			}
			n := c.nonce()
			var raw []json.RawMessage
			err := co.Call(ctx, "who", &raw, n)
			c.t.end(id)
			if err != nil {
				c.t.fail(err)
				return
			}
			if !check(n, raw) {
				return
			}
		}
		return
	}
	c.t.end(id) // the checkout is done; each pipelined call is counted from Go to Wait
	type sent struct {
		nonce string
		id    uint64
		p     *client.Pending
	}
	ps := make([]sent, calls)
	for i := range ps {
		ps[i].nonce = c.nonce()
		if i == 0 {
			c.t.attempted.Add(-1) // counted at the checkout
		}
		ps[i].id = c.t.begin(name, dl)
		ps[i].p = co.Go("who", ps[i].nonce)
	}
	for _, s := range ps {
		var raw []json.RawMessage
		err := s.p.Wait(ctx, &raw)
		c.t.end(s.id)
		if err != nil {
			c.t.fail(err)
			continue
		}
		check(s.nonce, raw)
	}
}
