package client

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

// BenchmarkMultiProbe measures what watching each attempt for a stalled daemon
// (probe.go) costs a Client of two fake daemons that answer at once: one-shot calls and
// checkouts (with one call, then Release), with the watch on (as shipped) and off (the
// baseline, in the same run).
func BenchmarkMultiProbe(b *testing.B) {
	for _, probe := range []bool{true, false} {
		name := "probe=on"
		if !probe {
			name = "probe=off"
		}
		newMultiBench := func(b *testing.B) *Client {
			c, err := New(Config{Addrs: []string{startCallFake(b), startCallFake(b)}, Interface: "echo"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() })
			if !probe {
				c.multi.probeAfter = 0
			}
			return c
		}
		b.Run("oneshot/"+name, func(b *testing.B) {
			c := newMultiBench(b)
			ctx := context.Background()
			var res json.RawMessage
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Call(ctx, "echo", &res, "x"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("checkout/"+name, func(b *testing.B) {
			c := newMultiBench(b)
			ctx := context.Background()
			var res json.RawMessage
			b.ReportAllocs()
			for b.Loop() {
				co, err := c.Checkout(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := co.Call(ctx, "echo", &res, "x"); err != nil {
					b.Fatal(err)
				}
				co.Release()
			}
		})
	}
}

// BenchmarkWatch is the watch alone, as an attempt answered within probeAfter pays it:
// a pooled timer armed and stopped (probe.go); the plain way, a time.AfterFunc per
// attempt, is the baseline.
func BenchmarkWatch(b *testing.B) {
	m := &multi{probeAfter: probeAfter, probeTimeout: probeTimeout}
	d := &daemon{}
	b.Run("afterfunc", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			time.AfterFunc(probeAfter, func() { d.stalls.Add(1) }).Stop()
		}
	})
	b.Run("watch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.startWatch(d, nil).stop()
		}
	})
	b.Run("watch+cancel", func(b *testing.B) { // a checkout's: with its context
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			actx, cancel := context.WithCancelCause(ctx)
			m.startWatch(d, cancel).stop()
			cancel(nil)
			_ = actx
		}
	})
}
