package systemd

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestStatusLoopEndsWithCtx: the STATUS= loop refreshes until the context ends, and then
// its goroutine is gone (goleak in TestMain).
func TestStatusLoopEndsWithCtx(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Setenv("NOTIFY_SOCKET", "") // send is a no-op
	n := &Notifier{Log: zap.NewNop()}
	calls := make(chan struct{}, 100)
	n.Ready(ctx, func() string {
		select {
		case calls <- struct{}{}:
		default:
		}
		return "serving"
	}, time.Millisecond)
	for range 3 { // one for READY=1, then refreshes
		select {
		case <-calls:
		case <-time.After(10 * time.Second):
			t.Fatal("STATUS= was not refreshed")
		}
	}
	cancel()
	done := make(chan struct{})
	go func() { n.Wait(); close(done) }()
	require.Eventually(t, func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}, 10*time.Second, time.Millisecond, "the status loop ends with its context")
}
