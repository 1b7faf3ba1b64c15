package client

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/wire"
)

// TestHelloFirst: every connection begins with a hello naming the client (Config.Name,
// else the program's name), before any request, on a reconnection too.
func TestHelloFirst(t *testing.T) {
	d := newFakeDaemon(t)
	c, err := New(Config{Addr: d.addr(), Interface: "echo", Name: "my-app"})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Ping(ctx)
	require.NoError(t, err)
	d.dropConns()
	require.Eventually(t, func() bool { _, err := c.Ping(ctx); return err == nil }, 5*time.Second, 5*time.Millisecond)
	got := d.order(wire.THello, wire.TPing)
	require.GreaterOrEqual(t, len(got), 4)
	assert.Equal(t, wire.ClientMsg{T: wire.THello, Name: "my-app"}, got[0])
	assert.Equal(t, wire.TPing, got[1].T)
	assert.Len(t, d.received(wire.THello), 2, "one per connection")

	c2, err := New(Config{Addr: d.addr()})
	require.NoError(t, err)
	defer c2.Close()
	_, err = c2.Ping(ctx)
	require.NoError(t, err)
	hellos := d.received(wire.THello)
	assert.Equal(t, filepath.Base(os.Args[0]), hellos[len(hellos)-1].Name)
}

// TestCheckoutsConversion: Client.Checkouts sends the interface asked for and converts
// taskd's answer.
func TestCheckoutsConversion(t *testing.T) {
	d := newFakeDaemon(t)
	handle := func(fc *fakeConn, m wire.ClientMsg) bool {
		if m.T != wire.TCheckouts {
			return false
		}
		fc.send(wire.ClientMsg{T: wire.TCheckouts, ID: m.ID, Checkouts: []wire.CheckoutInfo{{Co: 3, Interface: m.Iface,
			Worker: "echo-1", PID: 43, Holder: wire.Holder{Name: "app", PID: 7, UID: 33, GID: 33, Comm: "app"},
			HeldSec: 1.5, Calls: 4, Method: "hash", CallSec: 0.25, Warn: true}}})
		return true
	}
	d.mu.Lock()
	d.handle = handle
	d.mu.Unlock()
	c, err := New(Config{Addr: d.addr()})
	require.NoError(t, err)
	defer c.Close()
	list, err := c.Checkouts(context.Background(), "echo")
	require.NoError(t, err)
	assert.Equal(t, []CheckoutInfo{{ID: 3, Interface: "echo", Worker: "echo-1", PID: 43,
		Holder: Holder{Name: "app", PID: 7, UID: 33, GID: 33, Comm: "app"}, Held: 1500 * time.Millisecond,
		Calls: 4, Method: "hash", CallRunning: 250 * time.Millisecond, Warn: true}}, list)
	assert.Equal(t, "echo", d.received(wire.TCheckouts)[0].Iface)
}
