package client

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkQueuedCheckoutMemory reports the client heap cost of queued checkouts (issue:
// 10,000 queued checkouts must cost at most 20 MB). The checkouts wait in the (fake)
// daemon, which never grants them; stacks of the waiting goroutines are not heap and are
// the application's, not the client's.
func BenchmarkQueuedCheckoutMemory(b *testing.B) {
	for _, mw := range []int{0, 1} {
		b.Run(map[int]string{0: "in-daemon", 1: "MaxWorkers=1"}[mw], func(b *testing.B) {
			const n = 10000
			for range b.N {
				benchQueued(b, n, mw)
			}
		})
	}
}

func benchQueued(b *testing.B, n, maxWorkers int) {
	path := sockPath(b)
	d := startFakeDaemon(b, path)
	d.setHold(true)
	c, err := New(Config{Addr: "unix:" + path, Interface: "echo", MaxWorkers: maxWorkers, Timeout: -1})
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = c.Checkout(ctx)
		}()
	}
	require.Eventually(b, func() bool { return c.Stats().Waiting == n }, 30*time.Second, time.Millisecond)
	if maxWorkers == 0 {
		require.Eventually(b, func() bool { return d.numWaiting() == n }, 30*time.Second, time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// The fake daemon's own state is in the same heap: one small record per checkout.
	perCheckout := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MB/10k")
	b.ReportMetric(perCheckout, "heap-B/checkout")
	cancel()
	wg.Wait()
	c.Close()
	d.stop()
}
