package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

func TestNotReady(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   client.DaemonStatus
		only []string
		want []string // substrings, one per reason, in order
	}{
		{"ready", client.DaemonStatus{Interfaces: []client.InterfaceStatus{{Name: "a", MinIdle: 1, Idle: 1}, {Name: "b", MinIdle: 2, Busy: 1, Starting: 1}}}, nil, nil},
		{"on demand", client.DaemonStatus{Interfaces: []client.InterfaceStatus{{Name: "a"}}}, nil, nil},
		{"shutting down", client.DaemonStatus{Draining: true, Interfaces: []client.InterfaceStatus{{Name: "a", MinIdle: 1, Idle: 1}}}, nil,
			[]string{"shutting down"}},
		{"drained", client.DaemonStatus{Interfaces: []client.InterfaceStatus{{Name: "a", MinIdle: 1, Idle: 1, Draining: true}}}, nil,
			[]string{`interface "a": drained`}},
		{"starting", client.DaemonStatus{Interfaces: []client.InterfaceStatus{{Name: "a", MinIdle: 2, Starting: 2}}}, nil,
			[]string{`interface "a": no worker has started yet (min_idle 2, 2 starting)`}},
		{"start fails", client.DaemonStatus{Interfaces: []client.InterfaceStatus{{Name: "a", MinIdle: 1, LastError: "exit status 1:\nno module"}}}, nil,
			[]string{"the last start failed: exit status 1: no module"}},
		{"on demand, start fails", client.DaemonStatus{Interfaces: []client.InterfaceStatus{{Name: "a", LastError: "exec: not found"}}}, nil,
			[]string{`interface "a": no worker, and the last start failed: exec: not found`}},
		{"removed is left out", client.DaemonStatus{Interfaces: []client.InterfaceStatus{{Name: "a", MinIdle: 1, Removed: true}}}, nil, nil},
		{"only the named", client.DaemonStatus{Interfaces: []client.InterfaceStatus{{Name: "a", MinIdle: 1, Idle: 1}, {Name: "b", MinIdle: 1}}}, []string{"a"}, nil},
		{"named and removed", client.DaemonStatus{Interfaces: []client.InterfaceStatus{{Name: "a", Removed: true}}}, []string{"a"},
			[]string{"a reload removed it"}},
		{"named and unknown", client.DaemonStatus{Interfaces: []client.InterfaceStatus{{Name: "a", MinIdle: 1, Idle: 1}}}, []string{"zz"},
			[]string{`interface "zz": taskd does not serve it (it serves a)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := notReady(tc.st, tc.only)
			require.Len(t, got, len(tc.want), "%q", got)
			for i, w := range tc.want {
				assert.Contains(t, got[i], w)
			}
		})
	}
}

// TestReadyAndDrainAllRealDaemon: ready follows a real taskd through start, a broken
// interface, drain --all (as a preStop hook runs it) and resume; drain --all --wait
// returns once the held checkout is released.
func TestReadyAndDrainAllRealDaemon(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+
		taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 2")+
		taskdtest.WorkerYAML("broken", "exitnow", "min_idle: 1"))
	taskctl := func(a ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"--addr", d.Addr}, a...), &out, &errb)
		return code, out.String(), errb.String()
	}

	// The broken interface keeps the daemon unready; naming only echo makes it ready.
	require.Eventually(t, func() bool { code, _, _ := taskctl("ready", "echo"); return code == exitOK }, 20*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool {
		_, _, errs := taskctl("ready")
		return strings.Contains(errs, "the last start failed")
	}, 20*time.Second, 50*time.Millisecond)
	code, _, errs := taskctl("ready")
	assert.Equal(t, exitError, code)
	assert.Contains(t, errs, `not ready:`)
	assert.Contains(t, errs, `interface "broken": no worker has started yet`)
	assert.NotContains(t, errs, `interface "echo"`)
	code, out, errs := taskctl("ready", "echo")
	assert.Equal(t, exitOK, code, errs)
	assert.Regexp(t, `^ready: taskd \S+, 1 interface\(s\), 1 idle and 0 busy worker\(s\)\n$`, out)
	code, out, _ = taskctl("-o", "json", "ready", "echo")
	assert.Equal(t, exitOK, code)
	assert.JSONEq(t, `{"ready": true, "reasons": []}`, out)
	code, _, errs = taskctl("ready", "nope")
	assert.Equal(t, exitError, code)
	assert.Contains(t, errs, `interface "nope": taskd does not serve it (it serves broken, echo)`)

	// Usage errors.
	code, _, errs = taskctl("drain", "--all", "echo")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errs, "give no IFACE")
	code, _, _ = taskctl("drain", "--all", "--wait", "-1s")
	assert.Equal(t, exitUsage, code)
	code, _, _ = taskctl("drain")
	assert.Equal(t, exitUsage, code)

	// A held checkout: drain --all --wait returns only once it is released.
	c, err := client.New(client.Config{Addr: d.Addr, Interface: "echo", Timeout: 20 * time.Second})
	require.NoError(t, err)
	defer c.Close()
	co, err := c.Checkout(context.Background())
	require.NoError(t, err)
	type result struct {
		code      int
		out, errs string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errs := taskctl("drain", "--all", "--wait", "20s")
		done <- result{code, out, errs}
	}()
	require.Eventually(t, func() bool {
		_, _, errs := taskctl("ready", "echo")
		return strings.Contains(errs, `interface "echo": drained`)
	}, 10*time.Second, 20*time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("drain --wait returned while a checkout was held: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
	_, err = c.Checkout(context.Background())
	assert.ErrorIs(t, err, client.ErrDraining, "a drained interface refuses new checkouts")
	var echoed []string
	require.NoError(t, co.Call(context.Background(), "echo", &echoed, "held"), "the held checkout goes on")
	assert.Equal(t, []string{"held"}, echoed)
	co.Release()
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("drain --wait did not return after the release")
	}
	assert.Equal(t, exitOK, r.code, r.errs)
	assert.Contains(t, r.out, `interface "broken" drained`)
	assert.Contains(t, r.out, `interface "echo" drained`)
	assert.Contains(t, r.out, "no checkout held after")

	// --wait gives up on a checkout held too long, and still exits 0; resume undoes it.
	code, _, errs = taskctl("resume", "echo")
	require.Equal(t, exitOK, code, errs)
	co, err = c.Checkout(context.Background())
	require.NoError(t, err)
	code, out, errs = taskctl("drain", "echo", "--wait", "300ms")
	assert.Equal(t, exitOK, code, errs)
	assert.Contains(t, out, "1 checkout(s) still held after --wait 300ms")
	co.Release()
	code, _, errs = taskctl("resume", "echo")
	require.Equal(t, exitOK, code, errs)
	code, _, errs = taskctl("ready", "echo")
	assert.Equal(t, exitOK, code, errs)
}
