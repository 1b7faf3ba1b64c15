package pool_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/taskdtest"
)

// benchPool returns a pool of n real workers (the test binary in "raw" mode), all idle.
func benchPool(b *testing.B, n int) *pool.Pool {
	b.Helper()
	sp := &spawner{mode: "raw"}
	p := pool.New(pool.Config{Name: "t", MinIdle: n, MaxWorkers: n}, sp.spawn)
	b.Cleanup(func() {
		p.Close()
		sp.mu.Lock()
		pids := append([]int(nil), sp.pids...)
		sp.mu.Unlock()
		taskdtest.RequireGone(b, pids, 5*time.Second)
	})
	require.Eventually(b, func() bool { return p.Stats().Idle == n }, 10*time.Second, time.Millisecond)
	return p
}

// BenchmarkAcquireRelease measures one checkout of an idle worker and its release (which
// writes "done" to the worker): the pool's part of a one-shot call.
func BenchmarkAcquireRelease(b *testing.B) {
	b.Run("one-worker", func(b *testing.B) {
		p := benchPool(b, 1)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			l, err := p.Acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			l.Release(false)
		}
	})
	b.Run("parallel-4-workers", func(b *testing.B) {
		p := benchPool(b, 4)
		ctx := context.Background()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l, err := p.Acquire(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				l.Release(false)
			}
		})
	})
}
