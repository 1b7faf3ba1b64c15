package client

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/wire"
)

// onReload makes d answer every reload request with answer (its id filled in).
func onReload(d *fakeDaemon, answer wire.ClientMsg) {
	d.setHandler(func(fc *fakeConn, m wire.ClientMsg) bool {
		if m.T != wire.TReload {
			return false
		}
		a := answer
		a.ID = m.ID
		fc.send(a)
		return true
	})
}

// TestReload checks that the report is converted, and that its JSON (what taskctl reload
// -o json prints) is the client protocol's.
func TestReload(t *testing.T) {
	d := newFakeDaemon(t)
	wr := &wire.ReloadReport{
		Interfaces: []wire.InterfaceChange{
			{Name: "added", Change: wire.ChangeAdded, Generation: 1},
			{Name: "broken", Change: wire.ChangeFailed, Keys: []string{"command"}, Generation: 2, Error: "exit status 1: no module named foo"},
			{Name: "gone", Change: wire.ChangeRemoved},
			{Name: "passwd", Change: wire.ChangeNewGeneration, Keys: []string{"env", "dir"}, Generation: 3},
			{Name: "same", Change: wire.ChangeUnchanged, Generation: 1},
			{Name: "thumbs", Change: wire.ChangeResized, Keys: []string{"max_workers"}, Generation: 1},
			{Name: "vault", Change: wire.ChangeAccess, Keys: []string{"allow"}, Generation: 1},
		},
		Live:         []string{"admin", "hide_forbidden"},
		NeedsRestart: []string{"listen", "socket_mode"},
	}
	onReload(d, wire.ClientMsg{T: wire.TReloaded, Reload: wr})
	c, err := New(Config{Addr: d.addr()}) // no interface needed
	require.NoError(t, err)
	defer c.Close()

	rep, err := c.Reload(ctxTimeout(t, 5*time.Second))
	require.NoError(t, err)
	assert.Equal(t, ReloadReport{
		Interfaces: []InterfaceChange{
			{Name: "added", Change: ChangeAdded, Generation: 1},
			{Name: "broken", Change: ChangeFailed, Keys: []string{"command"}, Generation: 2, Error: "exit status 1: no module named foo"},
			{Name: "gone", Change: ChangeRemoved},
			{Name: "passwd", Change: ChangeNewGeneration, Keys: []string{"env", "dir"}, Generation: 3},
			{Name: "same", Change: ChangeUnchanged, Generation: 1},
			{Name: "thumbs", Change: ChangeResized, Keys: []string{"max_workers"}, Generation: 1},
			{Name: "vault", Change: ChangeAccess, Keys: []string{"allow"}, Generation: 1},
		},
		Live:         []string{"admin", "hide_forbidden"},
		NeedsRestart: []string{"listen", "socket_mode"},
	}, rep)
	reqs := d.received(wire.TReload)
	require.Len(t, reqs, 1)
	assert.NotZero(t, reqs[0].ID)

	want, err := json.Marshal(wr)
	require.NoError(t, err)
	got, err := json.Marshal(rep)
	require.NoError(t, err)
	assert.JSONEq(t, string(want), string(got))

	t.Run("nothing to report", func(t *testing.T) {
		onReload(d, wire.ClientMsg{T: wire.TReloaded, Reload: &wire.ReloadReport{}})
		rep, err := c.Reload(ctxTimeout(t, 5*time.Second))
		require.NoError(t, err)
		assert.Equal(t, ReloadReport{Interfaces: []InterfaceChange{}}, rep)
		b, err := json.Marshal(rep)
		require.NoError(t, err)
		assert.JSONEq(t, `{"interfaces":[]}`, string(b))
	})
}

func TestReloadRefused(t *testing.T) {
	t.Run("invalid config", func(t *testing.T) {
		d := newFakeDaemon(t)
		problems := "interfaces.passwd.command: empty: want the worker's argv\nmax_message_bytes: \"lots\": not a size\n"
		onReload(d, wire.ClientMsg{T: wire.TRefused, Code: wire.CodeInvalidConfig, Msg: problems})
		c := newClient(t, Config{Addr: d.addr()})
		_, err := c.Reload(ctxTimeout(t, 5*time.Second))
		require.ErrorIs(t, err, ErrInvalidConfig)
		assert.NotErrorIs(t, err, ErrProtocol)
		assert.True(t, strings.HasPrefix(err.Error(), ErrInvalidConfig.Error()+":\n"+
			"  interfaces.passwd.command: empty: want the worker's argv\n"+
			"  max_message_bytes: \"lots\": not a size\n"), err.Error())
		assert.Contains(t, err.Error(), "reload again")
	})
	t.Run("invalid config without details", func(t *testing.T) {
		d := newFakeDaemon(t)
		onReload(d, wire.ClientMsg{T: wire.TRefused, Code: wire.CodeInvalidConfig})
		c := newClient(t, Config{Addr: d.addr()})
		_, err := c.Reload(ctxTimeout(t, 5*time.Second))
		require.ErrorIs(t, err, ErrInvalidConfig)
		assert.Contains(t, err.Error(), "no details")
	})
	t.Run("shutting down", func(t *testing.T) {
		d := newFakeDaemon(t)
		onReload(d, wire.ClientMsg{T: wire.TRefused, Code: wire.CodeShuttingDown, Msg: "draining"})
		c := newClient(t, Config{Addr: d.addr()})
		_, err := c.Reload(ctxTimeout(t, 5*time.Second))
		require.ErrorIs(t, err, ErrShuttingDown)
		assert.NotErrorIs(t, err, ErrInvalidConfig)
		assert.Contains(t, err.Error(), "reload: taskd says \"draining\"")
	})
	t.Run("answered with another type", func(t *testing.T) {
		d := newFakeDaemon(t)
		onReload(d, wire.ClientMsg{T: wire.TPong, Version: "1"})
		c := newClient(t, Config{Addr: d.addr()})
		_, err := c.Reload(ctxTimeout(t, 5*time.Second))
		require.ErrorIs(t, err, ErrProtocol)
		assert.Contains(t, err.Error(), "pong")
	})
	t.Run("connection lost", func(t *testing.T) {
		d := newFakeDaemon(t)
		d.setHandler(func(fc *fakeConn, m wire.ClientMsg) bool {
			if m.T == wire.TReload {
				fc.nc.Close()
				return true
			}
			return false
		})
		c := newClient(t, Config{Addr: d.addr()})
		_, err := c.Reload(ctxTimeout(t, 5*time.Second))
		require.ErrorIs(t, err, ErrUnreachable)
		assert.Contains(t, err.Error(), "connection lost")
	})
}

func TestReloadTimeout(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		for _, tc := range []struct{ timeout, want time.Duration }{
			{0, DefaultReloadTimeout}, // Config.Timeout's default, 30s, is too short
			{time.Second, DefaultReloadTimeout},
			{time.Hour, time.Hour},
			{-1, 0}, // no timeout: as long as ctx allows
		} {
			c, err := New(Config{Addr: "unix:/nowhere.sock", Timeout: tc.timeout})
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.reloadTimeout(), "Config.Timeout %v", tc.timeout)
			c.Close()
		}
	})
	t.Run("Config.Timeout does not bound it", func(t *testing.T) {
		d := newFakeDaemon(t)
		const timeout = 10 * time.Millisecond
		d.setHandler(func(fc *fakeConn, m wire.ClientMsg) bool {
			if m.T == wire.TReload {
				time.Sleep(10 * timeout) // the new workers' setup
				fc.send(wire.ClientMsg{T: wire.TReloaded, ID: m.ID, Reload: &wire.ReloadReport{}})
				return true
			}
			return false
		})
		c := newClient(t, Config{Addr: d.addr(), Timeout: timeout})
		_, err := c.Reload(context.Background())
		require.NoError(t, err)
	})
	t.Run("ctx deadline", func(t *testing.T) {
		d := newFakeDaemon(t)
		d.setHandler(func(_ *fakeConn, m wire.ClientMsg) bool { return m.T == wire.TReload }) // never answered
		c := newClient(t, Config{Addr: d.addr()})
		_, err := c.Reload(ctxTimeout(t, 20*time.Millisecond))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "client: reload: no answer from taskd")
		assert.Contains(t, err.Error(), "once it is applied")
		// The late answer is dropped; the connection goes on serving.
		syncConn(t, c)
	})
}

// TestCheckoutInterfaceRemoved checks that a checkout refused because a reload removed
// the interface fails at once, as an unknown interface does, and is not sent again.
func TestCheckoutInterfaceRemoved(t *testing.T) {
	d := newFakeDaemon(t)
	d.setHandler(func(fc *fakeConn, m wire.ClientMsg) bool {
		if m.T == wire.TCheckout {
			fc.send(wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: wire.CodeRemoved, Msg: `interface "echo" was removed by a reload`})
			return true
		}
		return false
	})
	c := newClient(t, Config{Addr: d.addr(), MaxWorkers: 1})

	_, err := c.Checkout(ctxTimeout(t, 5*time.Second))
	require.ErrorIs(t, err, ErrInterfaceRemoved)
	require.ErrorIs(t, err, ErrUnknownInterface)
	assert.Contains(t, err.Error(), "client: interface removed by a reload")
	assert.Contains(t, err.Error(), `checkout of "echo"`)
	assert.Contains(t, err.Error(), "add it back to the config")

	// A one-shot call is refused the same way.
	err = c.Call(ctxTimeout(t, 5*time.Second), "echo", nil, 1)
	require.ErrorIs(t, err, ErrInterfaceRemoved)
	require.ErrorIs(t, err, ErrUnknownInterface)

	syncConn(t, c)
	assert.Len(t, d.received(wire.TCheckout), 2, "a refused checkout is not sent again")
	assert.Equal(t, Stats{MaxWorkers: 1, WaitCount: 2, WaitDuration: c.Stats().WaitDuration}, c.Stats(), "the MaxWorkers slot was given back")
}

func TestReloadErrorTexts(t *testing.T) {
	for _, err := range []error{ErrInterfaceRemoved, ErrInvalidConfig} {
		assert.True(t, strings.HasPrefix(err.Error(), "client: "), err.Error())
	}
	require.ErrorIs(t, ErrInterfaceRemoved, ErrUnknownInterface)
	assert.NotErrorIs(t, ErrUnknownInterface, ErrInterfaceRemoved)
}
