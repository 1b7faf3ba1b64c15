package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/taskd-dev/taskd/pkg/client"
)

// BenchmarkScale runs 16 callers on one client.Client against an in-process taskd with 16
// real examples/echo workers: held checkouts (one per caller) and one-shot Client.Call. It
// is the benchmark behind the mutex and block profiles of issue 14's "scale with cores":
//
//	go test -run '^$' -bench Scale -benchtime 3s \
//	    -mutexprofile mutex.out -blockprofile block.out ./internal/server
//	go tool pprof -top -sample_index=delay mutex.out
//
// (go test sets the profile rates from those flags.) Client and daemon run in this
// process, so both sides' locks show in one profile. Each case runs with one connection
// per Client (conns=1, as before a Client had several) and with the default.
func BenchmarkScale(b *testing.B) {
	const callers = 16
	payload := strings.Repeat("x", 50)
	for _, conns := range []int{1, 0} { // one connection (as before lanes), and the default
		b.Run(fmt.Sprintf("held/callers=16/conns=%d", conns), func(b *testing.B) { benchScaleHeld(b, callers, conns, payload) })
		b.Run(fmt.Sprintf("oneshot/callers=16/conns=%d", conns), func(b *testing.B) { benchScaleOnce(b, callers, conns, payload) })
	}
}

// benchScaleHeld runs callers goroutines, each with a checkout of its own, on one Client
// with Config.Conns conns.
func benchScaleHeld(b *testing.B, callers, conns int, payload string) {
	addr := startInProcess(b, callers)
	c, err := client.New(client.Config{Addr: addr, Interface: "echo", Conns: conns})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	// Check out every worker first, so that the measured part is calls only.
	cos := make(chan *client.Checkout, callers)
	for range callers {
		co, err := c.Checkout(ctx)
		if err != nil {
			b.Fatal(err)
		}
		cos <- co
	}
	defer func() {
		close(cos)
		for co := range cos {
			co.Release()
		}
	}()
	var got atomic.Int64
	b.SetParallelism(parallelism(callers)) // × GOMAXPROCS: about 16 goroutines
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		co := <-cos
		defer func() { cos <- co }()
		var out json.RawMessage
		for pb.Next() {
			if err := co.Call(ctx, "echo", &out, payload); err != nil {
				b.Error(err)
				return
			}
			got.Add(1)
		}
	})
	if got.Load() == 0 {
		b.Fatal("no call completed")
	}
}

// benchScaleOnce runs callers goroutines making one-shot calls on one Client with
// Config.Conns conns.
func benchScaleOnce(b *testing.B, callers, conns int, payload string) {
	addr := startInProcess(b, callers)
	c, err := client.New(client.Config{Addr: addr, Interface: "echo", Conns: conns})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Call(ctx, "echo", nil, "warm"); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(parallelism(callers))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var out json.RawMessage
		for pb.Next() {
			if err := c.Call(ctx, "echo", &out, payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// parallelism is the b.SetParallelism that runs at most n goroutines (RunParallel starts
// that many per GOMAXPROCS).
func parallelism(n int) int { return max(1, n/runtime.GOMAXPROCS(0)) }
