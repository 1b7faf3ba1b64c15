package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// chaos is everything that goes wrong while the callers call. Each kind runs in its own
// goroutine until stop is closed; run waits for all of them.
type chaos struct {
	d    *daemon
	dur  time.Duration // how long the chaos lasts: restarts happen at 30% and 60% of it
	seed uint64
	logf func(format string, args ...any)

	kills, stops, reloads, restarts, cuts, uncut, vanished atomic.Int64

	mu      sync.Mutex
	stopped map[int]bool // SIGSTOPped workers not yet continued
	errs    []error
	downs   []string // each restart: the signal and how long until the new taskd was ready
}

func (ch *chaos) fail(err error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.errs = append(ch.errs, err)
}

// run runs every kind of chaos until stop is closed, then continues the stopped workers.
func (ch *chaos) run(stop <-chan struct{}) {
	ch.stopped = map[int]bool{}
	var wg sync.WaitGroup
	for i, f := range []func(<-chan struct{}, *rand.Rand){ch.killer, ch.stopper, ch.reloader, ch.restarter, ch.nonReader, ch.vanisher} {
		wg.Go(func() { f(stop, rand.New(rand.NewPCG(ch.seed, uint64(i)))) })
	}
	wg.Wait()
	ch.mu.Lock()
	for p := range ch.stopped {
		_ = syscall.Kill(p, syscall.SIGCONT)
	}
	ch.stopped = nil
	ch.mu.Unlock()
}

// every calls f every d (jittered by ±50% if jitter) until stop is closed.
func every(stop <-chan struct{}, rng *rand.Rand, d time.Duration, jitter bool, f func()) {
	for {
		wait := d
		if jitter {
			wait = d/2 + time.Duration(rng.Int64N(int64(d)))
		}
		select {
		case <-stop:
			return
		case <-time.After(wait):
		}
		f()
	}
}

// pick returns a random worker of the running taskd, or 0.
func (ch *chaos) pick(rng *rand.Rand) int {
	w := ch.d.workers()
	if len(w) == 0 {
		return 0
	}
	return w[rng.IntN(len(w))]
}

// killer SIGKILLs a random worker every 100ms.
func (ch *chaos) killer(stop <-chan struct{}, rng *rand.Rand) {
	every(stop, rng, 100*time.Millisecond, false, func() {
		if p := ch.pick(rng); p != 0 && syscall.Kill(p, syscall.SIGKILL) == nil {
			ch.kills.Add(1)
		}
	})
}

// stopper SIGSTOPs a random worker every 2s or so, for longer than call_timeout, then
// continues it (SIGCONT to a pid that has gone meanwhile is harmless: taskd reaps its
// workers, and a new process with that pid is not stopped).
func (ch *chaos) stopper(stop <-chan struct{}, rng *rand.Rand) {
	every(stop, rng, 2*time.Second, true, func() {
		p := ch.pick(rng)
		if p == 0 || syscall.Kill(p, syscall.SIGSTOP) != nil {
			return
		}
		ch.stops.Add(1)
		ch.mu.Lock()
		ch.stopped[p] = true
		ch.mu.Unlock()
		time.AfterFunc(callTimeout+500*time.Millisecond, func() {
			ch.mu.Lock()
			defer ch.mu.Unlock()
			if ch.stopped[p] {
				_ = syscall.Kill(p, syscall.SIGCONT)
				delete(ch.stopped, p)
			}
		})
	})
}

// reloader rewrites the config with a new env for go, raw and py and sends SIGHUP, every
// 3s or so: each reload starts a new generation of their workers.
func (ch *chaos) reloader(stop <-chan struct{}, rng *rand.Rand) {
	every(stop, rng, 3*time.Second, true, func() {
		if err := ch.d.reload(); err != nil {
			ch.fail(fmt.Errorf("reload: %w", err))
			return
		}
		ch.reloads.Add(1)
	})
}

// restarter restarts taskd on the same socket twice: with SIGTERM at 30% of the chaos,
// with SIGKILL at 60%.
func (ch *chaos) restarter(stop <-chan struct{}, _ *rand.Rand) {
	start := time.Now()
	for _, r := range []struct {
		at  float64
		sig syscall.Signal
	}{{0.3, syscall.SIGTERM}, {0.6, syscall.SIGKILL}} {
		select {
		case <-stop:
			return
		case <-time.After(time.Until(start.Add(time.Duration(r.at * float64(ch.dur))))):
		}
		ch.logf("restarting taskd with %v", r.sig)
		t0 := time.Now()
		if err := ch.d.restart(context.Background(), r.sig); err != nil {
			ch.fail(fmt.Errorf("restart after %v: %w", r.sig, err))
			return
		}
		ch.restarts.Add(1)
		took := time.Since(t0).Round(time.Millisecond)
		ch.logf("taskd restarted (pid %d) in %v", ch.d.current().PID(), took)
		ch.mu.Lock()
		ch.downs = append(ch.downs, fmt.Sprintf("%s %v", map[syscall.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGKILL: "SIGKILL"}[r.sig], took))
		ch.mu.Unlock()
	}
}

// nonReader is a client that stops reading its socket: it sends one-shot echo calls with
// 64 KiB arguments and never reads the answers, until taskd cuts it off (more than
// 4 × max_message_bytes of answers unread), then connects again.
func (ch *chaos) nonReader(stop <-chan struct{}, rng *rand.Rand) {
	payload := strings.Repeat("n", 64<<10)
	id := 0
	every(stop, rng, time.Second, false, func() {
		conn, err := net.Dial("unix", ch.d.current().Socket)
		if err != nil {
			return
		}
		defer conn.Close()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-stop:
				return
			default:
			}
			id++
			_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, err := fmt.Fprintf(conn, `{"t":"checkout","id":%d,"iface":"go","once":true,"m":"echo","a":[%q]}`+"\n", id, payload)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					continue // taskd is not reading us either (yet)
				}
				ch.cuts.Add(1) // taskd closed the connection
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		ch.uncut.Add(1)
	})
}

// vanisher is clients that connect and vanish: right away, after asking for a checkout,
// or holding a checkout with a call running.
func (ch *chaos) vanisher(stop <-chan struct{}, rng *rand.Rand) {
	every(stop, rng, 50*time.Millisecond, false, func() {
		conn, err := net.Dial("unix", ch.d.current().Socket)
		if err != nil {
			return
		}
		defer conn.Close()
		ch.vanished.Add(1)
		iface := []string{"go", "raw", "py"}[rng.IntN(3)]
		switch rng.IntN(3) {
		case 0:
			return
		case 1:
			fmt.Fprintf(conn, `{"t":"checkout","id":1,"iface":%q}`+"\n", iface)
			return
		}
		fmt.Fprintf(conn, `{"t":"checkout","id":1,"iface":%q}`+"\n", iface)
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(conn).ReadBytes('\n')
		if err != nil {
			return
		}
		var m struct {
			T  string `json:"t"`
			Co uint64 `json:"co"`
		}
		if json.Unmarshal(line, &m) != nil || m.T != "granted" {
			return
		}
		fmt.Fprintf(conn, `{"t":"call","co":%d,"id":1,"m":"who","a":["vanish"]}`+"\n", m.Co)
	})
}
