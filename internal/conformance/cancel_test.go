package conformance_test

// Cancel before kill, with each SDK: a caller who gives up on a call gets its error at its
// deadline; the worker gets a cancel and cancel_grace to answer before it is killed.

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// exits returns taskd's count of the ended workers of interface "w", by reason.
func exits(t *testing.T, c *client.Client) map[string]uint64 {
	st, err := c.DaemonStatus(ctxT(t))
	require.NoError(t, err)
	for _, is := range st.Interfaces {
		if is.Name == "w" {
			return is.Exits
		}
	}
	return nil
}

// TestCancelAwareMethodCleansUp: a method that watches for cancellation sees it when its
// caller's deadline passes, and its cleanup runs; the worker, having answered within the
// grace, is retired rather than killed.
func TestCancelAwareMethodCleansUp(t *testing.T) {
	const grace = 10 * time.Second
	forEach(t, true, func(t *testing.T, im impl) {
		t.Parallel()
		c := newClient(t, start(t, im, sdkOneWorker+"\ncancel_grace: 10s"))
		co, err := c.Checkout(ctxT(t))
		require.NoError(t, err)
		defer co.Release()
		p := sdkPID(t, co)
		path := filepath.Join(t.TempDir(), "cleanup")

		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		begin := time.Now()
		err = co.Call(ctx, "cancel_cleanup", nil, path)
		took := time.Since(begin)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, took, grace, "the caller returns at its deadline, not after the grace")
		require.ErrorIs(t, co.Call(ctxT(t), "echo", nil), context.DeadlineExceeded, "the checkout stays failed")

		require.Eventually(t, func() bool {
			b, err := os.ReadFile(path)
			return err == nil && string(b) == "cleaned up"
		}, 20*time.Second, 5*time.Millisecond, "the method saw its cancel and cleaned up")
		taskdtest.RequireGone(t, []int{p}, 20*time.Second)
		require.Eventually(t, func() bool { return exits(t, c)[client.ExitReleased] == 1 }, 20*time.Second,
			5*time.Millisecond, "retired after answering in time: %v", exits(t, c))
		assert.Zero(t, exits(t, c)[client.ExitKilled], "not killed")
	})
}

// TestMethodIgnoringCancelIsKilledAfterGrace: a method that never looks at cancellation
// keeps running through cancel_grace, then its worker is killed.
func TestMethodIgnoringCancelIsKilledAfterGrace(t *testing.T) {
	const grace = time.Second
	forEach(t, true, func(t *testing.T, im impl) {
		t.Parallel()
		c := newClient(t, start(t, im, sdkOneWorker+"\ncancel_grace: 1s"))
		co, err := c.Checkout(ctxT(t))
		require.NoError(t, err)
		defer co.Release()
		p := sdkPID(t, co)

		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		begin := time.Now()
		require.ErrorIs(t, co.Call(ctx, "spin", nil), context.DeadlineExceeded)
		taskdtest.RequireGone(t, []int{p}, 20*time.Second)
		assert.GreaterOrEqual(t, time.Since(begin), grace, "killed only after cancel_grace")
		require.Eventually(t, func() bool { return exits(t, c)[client.ExitKilled] == 1 }, 20*time.Second,
			5*time.Millisecond, "killed: %v", exits(t, c))
	})
}
