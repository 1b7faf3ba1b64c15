package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

func TestRenderCheckouts(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, renderCheckouts(&buf, nil))
	assert.Equal(t, "no checkouts held\n", buf.String())

	buf.Reset()
	require.NoError(t, renderCheckouts(&buf, []client.CheckoutInfo{
		{ID: 7, Interface: "passwd", Worker: "passwd-3", PID: 4242, Holder: client.Holder{Name: "webapp", PID: 900, UID: 33},
			Held: 95 * time.Second, Calls: 12, Method: "hash", CallRunning: 1500 * time.Millisecond, Warn: true},
		{ID: 9, Interface: "passwd", Worker: "passwd-4", PID: 4243, Holder: client.Holder{UID: -1, Addr: "127.0.0.1:5000"},
			Once: true, Held: 20 * time.Millisecond},
		{ID: 11, Interface: "passwd", Worker: "passwd-5", PID: 4244, Held: time.Second,
			Holder: client.Holder{Name: "web", UID: -1, Addr: "10.0.0.7:5000", TLSNames: []string{"web.example.org", "spiffe://example.org/web"}}},
	}))
	assert.Regexp(t, `(?m)^\s+11\s+passwd\s+passwd-5\s+4244\s+web \(web.example.org,spiffe://example.org/web\)\s+10.0.0.7:5000\s+-\s+1s\s+0\s+-\s+-$`, buf.String())
	assert.Regexp(t, `(?m)^!\s+7\s+passwd\s+passwd-3\s+4242\s+webapp\s+900\s+33\s+1m35s\s+12\s+hash\s+1.5s$`, buf.String())
	assert.Regexp(t, `(?m)^\s+9 \(call\)\s+passwd\s+passwd-4\s+4243\s+-\s+127.0.0.1:5000\s+-\s+20ms\s+0\s+-\s+-$`, buf.String())
}

// TestCheckoutsRealDaemon: `taskctl checkouts` against a real taskd lists the checkout
// this test holds, with this process as its holder, as a table and as JSON.
func TestCheckoutsRealDaemon(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\ncheckout_warn_after: 100ms"))
	c, err := client.New(client.Config{Addr: d.Addr, Interface: "echo", Name: "ctl-test"})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	defer co.Release()
	require.NoError(t, co.Call(ctx, "echo", nil))

	taskctl := func(args ...string) string {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"--addr", d.Addr}, args...), &out, &errb)
		require.Equal(t, exitOK, code, errb.String())
		return out.String()
	}
	me := strconv.Itoa(os.Getpid())
	assert.Regexp(t, `(?m)^!?\s+\d+\s+echo\s+echo-\d+\s+\d+\s+ctl-test\s+`+me+`\s+\d+\s+\S+\s+1\s+-\s+-$`, taskctl("checkouts"))

	var list []client.CheckoutInfo
	require.Eventually(t, func() bool {
		list = nil
		require.NoError(t, json.Unmarshal([]byte(taskctl("-o", "json", "checkouts", "echo")), &list))
		return len(list) == 1 && list[0].Warn
	}, 5*time.Second, 20*time.Millisecond, "marked once held past checkout_warn_after")
	assert.Equal(t, os.Getpid(), list[0].Holder.PID)
	assert.Equal(t, "ctl-test", list[0].Holder.Name)
	assert.Equal(t, uint64(1), list[0].Calls)
	assert.Positive(t, list[0].Held)
	assert.Regexp(t, `(?m)^!\s+\d+\s+echo\s`, taskctl("checkouts"))

	var out, errb bytes.Buffer
	assert.Equal(t, exitError, run(context.Background(), []string{"--addr", d.Addr, "checkouts", "nope"}, &out, &errb))
	assert.Contains(t, errb.String(), `this daemon serves: echo`)
}
