package worker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/worker"
)

// goCall sends a call and returns the channel its reply arrives on.
func goCall(t *testing.T, w *worker.Worker, method string) <-chan worker.Reply {
	t.Helper()
	ch := make(chan worker.Reply, 1)
	_, err := w.Call(method, []byte("[]"), func(r worker.Reply) { ch <- r.Clone() })
	require.NoError(t, err)
	require.Eventually(t, func() bool { return w.Info().Method == method }, 5*time.Second, time.Millisecond)
	return ch
}

func recvReply(t *testing.T, ch <-chan worker.Reply) worker.Reply {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no reply")
		return worker.Reply{}
	}
}

// settledSignal returns a settled function for Interrupt and a channel closed when it runs.
func settledSignal() (func(), <-chan struct{}) {
	ch := make(chan struct{})
	return func() { close(ch) }, ch
}

// TestInterruptAnsweredWithinGrace: a worker that answers the cancel within cancel_grace is
// not killed; its call fails at once all the same, and its late answer is dropped.
func TestInterruptAnsweredWithinGrace(t *testing.T) {
	w, _, err := start(t, "raw", func(c *worker.Config) { c.CancelGrace = 10 * time.Second })
	require.NoError(t, err)
	ch := goCall(t, w, "wait") // answers "cancelled" when its cancel comes
	cause := errors.New("caller gave up")
	settled, done := settledSignal()
	w.Interrupt(cause, settled)
	r := recvReply(t, ch)
	require.ErrorIs(t, r.Err, cause, "the call fails at once")
	assert.Contains(t, r.Err.Error(), "cancel_grace")
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("not settled once the worker answered")
	}
	assert.True(t, w.Alive(), "answered in time: not killed")
	_, err = w.Call("echo", []byte("[]"), func(worker.Reply) { t.Error("a call after Interrupt ran") })
	require.ErrorIs(t, err, cause, "an interrupted worker takes no more calls")
	w.Stop(errors.New("retired"), time.Second)
	<-w.Exited()
	var ee *worker.ExitError
	require.ErrorAs(t, w.Err(), &ee)
	assert.Contains(t, ee.Reason, "exited cleanly", "it ended at EOF, not by a kill")
}

// TestInterruptKillsAfterGrace: a worker that ignores the cancel is killed once
// cancel_grace has passed, not before.
func TestInterruptKillsAfterGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	w, _, err := start(t, "raw", func(c *worker.Config) { c.CancelGrace = grace })
	require.NoError(t, err)
	ch := goCall(t, w, "spin")
	cause := errors.New("caller gave up")
	settled, done := settledSignal()
	begin := time.Now()
	w.Interrupt(cause, settled)
	require.ErrorIs(t, recvReply(t, ch).Err, cause)
	<-done
	<-w.Exited()
	assert.GreaterOrEqual(t, time.Since(begin), grace, "killed only after the grace")
	var ee *worker.ExitError
	require.ErrorAs(t, w.Err(), &ee)
	assert.ErrorIs(t, ee.Cause, cause)
	assert.Contains(t, ee.Reason, "SIGKILL")
}

// TestInterruptWithoutGraceKills: cancel_grace 0 kills at once, as Kill does.
func TestInterruptWithoutGraceKills(t *testing.T) {
	w, _, err := start(t, "raw", nil)
	require.NoError(t, err)
	ch := goCall(t, w, "wait")
	cause := errors.New("caller gave up")
	settled, done := settledSignal()
	w.Interrupt(cause, settled)
	<-done
	r := recvReply(t, ch)
	var ee *worker.ExitError
	require.ErrorAs(t, r.Err, &ee, "the call fails when the worker has exited")
	assert.ErrorIs(t, ee.Cause, cause)
}

// TestCallTimeoutCancelsFirst: call_timeout fails the call at once and sends a cancel; the
// worker is killed only if it does not answer within cancel_grace.
func TestCallTimeoutCancelsFirst(t *testing.T) {
	const grace = 300 * time.Millisecond
	w, _, err := start(t, "raw", func(c *worker.Config) { c.CallTimeout, c.CancelGrace = 100*time.Millisecond, 10*time.Second })
	require.NoError(t, err)
	ch := goCall(t, w, "wait")
	r := recvReply(t, ch)
	require.ErrorIs(t, r.Err, worker.ErrCallTimeout)
	settled, done := settledSignal()
	w.Interrupt(r.Err, settled) // as the checkout does on learning of it
	<-done
	assert.True(t, w.Alive(), "it answered the cancel: not killed")

	w2, _, err := start(t, "raw", func(c *worker.Config) { c.CallTimeout, c.CancelGrace = 100*time.Millisecond, grace })
	require.NoError(t, err)
	begin := time.Now()
	r = recvReply(t, goCall(t, w2, "spin"))
	require.ErrorIs(t, r.Err, worker.ErrCallTimeout)
	<-w2.Exited()
	assert.GreaterOrEqual(t, time.Since(begin), grace)
	require.ErrorIs(t, w2.Err(), worker.ErrCallTimeout)
}
