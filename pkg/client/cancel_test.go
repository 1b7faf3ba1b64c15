package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/wire"
)

// order returns the messages the fake daemon received, in order, keeping
// only those of the types given.
func (d *fakeDaemon) order(types ...string) []wire.ClientMsg {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []wire.ClientMsg
	for _, m := range d.got {
		for _, t := range types {
			if m.T == t {
				out = append(out, m)
			}
		}
	}
	return out
}

// TestGivingUpSendsCancelThenAbort: when a caller's context ends during a call, the client
// returns at once and sends taskd a cancel for that call, then the checkout's abort.
func TestGivingUpSendsCancelThenAbort(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait func(ctx context.Context, co *Checkout) error
		is   error
	}{
		{"deadline", func(ctx context.Context, co *Checkout) error {
			short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			defer cancel()
			return co.Call(short, "hang", nil)
		}, context.DeadlineExceeded},
		{"cancelled", func(ctx context.Context, co *Checkout) error {
			p := co.Go("hang")
			cctx, cancel := context.WithCancel(ctx)
			time.AfterFunc(20*time.Millisecond, cancel)
			return p.Wait(cctx, nil)
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _, ctx, co := checkedOut(t)
			begin := time.Now()
			err := tc.wait(ctx, co)
			require.ErrorIs(t, err, tc.is)
			assert.Less(t, time.Since(begin), 2*time.Second, "the caller does not wait for the worker")
			assert.Contains(t, err.Error(), "cancel_grace")

			d.waitReceived(wire.TAbort, 1)
			got := d.order(wire.TCall, wire.TCancel, wire.TAbort)
			require.Len(t, got, 3, "%+v", got)
			assert.Equal(t, wire.TCancel, got[1].T)
			assert.Equal(t, got[0].Co, got[1].Co)
			assert.Equal(t, got[0].ID, got[1].ID, "the cancel names the call given up")
			assert.Equal(t, wire.TAbort, got[2].T)
			assert.Equal(t, got[0].Co, got[2].Co)
			require.ErrorIs(t, co.Call(ctx, "echo", nil), tc.is, "the checkout stays failed")
		})
	}
}

// TestAbortSendsNoCancel: Abort leaves cancelling the calls to taskd (its abort cancels
// every call the worker has); a call answered in time sends nothing at all.
func TestAbortSendsNoCancel(t *testing.T) {
	d, _, ctx, co := checkedOut(t)
	require.NoError(t, co.Call(ctx, "echo", nil))
	p := co.Go("hang")
	d.waitReceived(wire.TCall, 2)
	co.Abort(errors.New("stop"))
	require.ErrorIs(t, p.Wait(ctx, nil), ErrAborted)
	d.waitReceived(wire.TAbort, 1)
	assert.Empty(t, d.received(wire.TCancel))
}
