package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// TestClientAbuse: each abuse of the client protocol gets a typed error or a clean close
// (a fatal message saying why, then the end of the connection), and the daemon keeps
// serving a well-behaved client all along: one client calls in a loop from start to end,
// and must also work after each abuse. (Lines too long and not UTF-8 are tested in
// detail in lines_test.go; here they are abuses among the others.)
func TestClientAbuse(t *testing.T) {
	const maxClients, idle = 50, 2000
	port := freePort(t)
	yaml := fmt.Sprintf("metrics_listen: \"127.0.0.1:%d\"\nmax_message_bytes: 1MiB\nmax_clients: %d\nhello_timeout: 2s\ninterfaces:\n",
		port, maxClients) + taskdtest.WorkerYAML("echo", "raw", "min_idle: 1") +
		taskdtest.WorkerYAML("secret", "raw", "min_idle: 0\nallow: {uids: [65534]}")
	var e *accessEnv
	var d *taskdtest.Daemon
	if os.Geteuid() == 0 {
		e = newAccessEnv(t)
		d = e.start(t, yaml)
	} else {
		d = taskdtest.Start(t, yaml)
	}

	good := newClient(t, d, "echo")
	require.NoError(t, good.Call(ctxT(t), "echo", nil, "hello"))
	works := func(t *testing.T) {
		t.Helper()
		var got []string
		require.NoError(t, good.Call(ctxT(t), "echo", &got, "still here"), "the well-behaved client is served")
		assert.Equal(t, []string{"still here"}, got)
	}
	stop := make(chan struct{})
	var loopCalls atomic.Int64
	var loopErr atomic.Value
	var loop sync.WaitGroup
	loop.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := good.Call(ctxT(t), "echo", nil, "loop"); err != nil {
				loopErr.CompareAndSwap(nil, err.Error())
			}
			loopCalls.Add(1)
		}
	})

	fatalOf := func(t *testing.T, c net.Conn) map[string]any {
		t.Helper()
		fatal, _, end := readFatal(t, c)
		require.NotNil(t, fatal, "taskd closed the connection without saying why (%v)", end)
		assert.True(t, closedByPeer(end), "then closed it: %v", end)
		return fatal
	}
	dial := func(t *testing.T) net.Conn {
		c, err := net.Dial("unix", d.Socket)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"garbage bytes", func(t *testing.T) {
			c := dial(t)
			_, err := c.Write([]byte("\x00\x01\x02GET / HTTP/1.1\r\n\r\n"))
			require.NoError(t, err)
			assert.Contains(t, fatalOf(t, c)["msg"], "expected a JSON object per line")
		}},
		{"an unterminated line past max_message_bytes", func(t *testing.T) {
			c := dial(t)
			require.NoError(t, c.SetWriteDeadline(time.Now().Add(20*time.Second)))
			_, _ = c.Write(unterminated(mib + 1)) // may fail once taskd has refused it
			assert.Contains(t, fatalOf(t, c)["msg"], "(max_message_bytes)")
		}},
		{"invalid UTF-8", func(t *testing.T) {
			c := dial(t)
			_, err := c.Write([]byte("{\"t\":\"ping\",\"id\":1,\"x\":\"\xff\xfe\"}\n"))
			require.NoError(t, err)
			assert.Contains(t, fatalOf(t, c)["msg"], "not valid UTF-8")
		}},
		{"valid JSON of an unknown type", func(t *testing.T) {
			r := dialRaw(t, d)
			r.send(`{"t":"launch_missiles","id":7,"target":"moon"}`)
			m := r.recv()
			assert.Equal(t, "refused", m["t"])
			assert.Equal(t, "invalid_request", m["code"])
			assert.EqualValues(t, 7, m["id"])
			assert.Contains(t, m["msg"], `unknown request type "launch_missiles"`)
			r.send(`{"t":"some_notice"}`) // no id: nothing to answer, ignored
			r.send(`{"t":"ping","id":8}`)
			assert.Equal(t, "pong", r.recv()["t"], "the connection goes on")
		}},
		{"a checkout of an interface the peer may not use", func(t *testing.T) {
			r := dialRaw(t, d)
			r.send(`{"t":"checkout","id":1,"iface":"secret"}`)
			r.send(`{"t":"checkout","id":2,"iface":"secret","once":true,"m":"echo","a":["x"]}`)
			for id := 1; id <= 2; id++ {
				m := r.recv()
				assert.Equal(t, "refused", m["t"])
				assert.Equal(t, "forbidden", m["code"])
				assert.EqualValues(t, id, m["id"])
				assert.Contains(t, m["msg"], `interface "secret" may not be used by uid `+fmt.Sprint(os.Getuid()))
			}
			r.send(`{"t":"ping","id":3}`)
			assert.Equal(t, "pong", r.recv()["t"], "the connection goes on")
		}},
		{"admin requests from a non-admin", func(t *testing.T) {
			if e == nil {
				t.Skip("needs root: the non-admin is a client running as nobody")
			}
			for _, op := range []string{"drain"} {
				res := e.as(t, nil, d, op, "echo")
				assert.True(t, res.NotPermitted, "%s: %s", op, res.Err)
				assert.Contains(t, res.Err, "uid 65534 (nobody)")
			}
			assert.False(t, status(t, good, "echo").Draining, "nothing was drained")
		}},
		{"a connection that sends nothing", func(t *testing.T) {
			start := time.Now()
			fatal := fatalOf(t, dial(t))
			assert.Equal(t, "hello_timeout", fatal["code"])
			assert.Contains(t, fatal["msg"], "no request within 2s of connecting (hello_timeout)")
			assert.GreaterOrEqual(t, time.Since(start), 1500*time.Millisecond)
		}},
		{"a connection that never ends its first line", func(t *testing.T) {
			c := dial(t)
			_, err := c.Write([]byte(`{"t":"pi`))
			require.NoError(t, err)
			assert.Equal(t, "hello_timeout", fatalOf(t, c)["code"])
		}},
		{fmt.Sprintf("%d idle connections", idle), func(t *testing.T) {
			raiseNoFile(t, idle+500)
			conns := make([]net.Conn, 0, idle)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for range idle {
				c, err := net.Dial("unix", d.Socket)
				require.NoError(t, err)
				conns = append(conns, c)
			}
			works(t) // while they are all open
			codes := map[string]int{}
			for _, c := range conns {
				require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
				line, err := bufio.NewReader(c).ReadBytes('\n')
				require.NoError(t, err, "every connection is told why it ends")
				var m map[string]any
				require.NoError(t, json.Unmarshal(line, &m))
				require.Equal(t, "fatal", m["t"])
				code, _ := m["code"].(string)
				codes[code]++
				if code == "too_many_clients" && codes[code] == 1 {
					assert.Contains(t, m["msg"], fmt.Sprintf("at most %d client connections at once (max_clients)", maxClients))
				}
			}
			t.Logf("%d connections: %v", idle, codes)
			assert.Equal(t, idle, codes["too_many_clients"]+codes["hello_timeout"], "refused, or served and closed when silent: %v", codes)
			// At most maxClients-1 at once are served (the well-behaved client holds a slot);
			// more if dialling them all took longer than hello_timeout on a slow machine.
			assert.GreaterOrEqual(t, codes["too_many_clients"], idle*3/4, "most are refused")
			assert.Positive(t, codes["hello_timeout"], "those served until max_clients were closed for their silence")
			// Their slots are free again: a new client is served.
			require.Eventually(t, func() bool {
				_, err := newClient(t, d, "echo").Ping(ctxT(t))
				return err == nil
			}, 20*time.Second, 50*time.Millisecond)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t)
			works(t)
		})
	}
	close(stop)
	loop.Wait()
	assert.Nil(t, loopErr.Load(), "a call of the well-behaved client failed")
	assert.Positive(t, loopCalls.Load())

	s := getMetrics(t, port)
	assert.Contains(t, s.text, `taskd_checkouts_forbidden_total{interface="secret"} 2`)
	assert.Regexp(t, `taskd_client_connections_refused_total\{reason="max_clients"\} \d{4}`, s.text)
	assert.Regexp(t, `taskd_client_connections_refused_total\{reason="hello_timeout"\} [1-9]`, s.text)
	if e != nil {
		assert.Contains(t, s.text, "taskd_admin_refused_total 1")
	}
	assert.Equal(t, 1, strings.Count(d.Logs(), "refusing client connections: max_clients are open"),
		"refusals over max_clients are logged at most every 10s")
}

// raiseNoFile raises this process's soft RLIMIT_NOFILE to n if it is lower (and the hard
// limit allows it), until the test ends; it skips the test if n cannot be had.
func raiseNoFile(t *testing.T, n uint64) {
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("needs %d open files; RLIMIT_NOFILE's hard limit is %d", n, lim.Max)
	}
	old := lim
	lim.Cur = n
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim))
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// TestMaxClientsThroughTheClient: a pkg/client client refused for max_clients is told so
// (not a protocol error), keeps trying while its deadline lets it, and is served once a
// connection closes. hello_timeout is off here: a silent connection holds its slot.
func TestMaxClientsThroughTheClient(t *testing.T) {
	d := taskdtest.Start(t, "max_clients: 1\nhello_timeout: -1s\ninterfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1"))
	hog, err := net.Dial("unix", d.Socket)
	require.NoError(t, err)
	defer hog.Close()
	require.Eventually(t, func() bool { // the hog's session has started
		c, err := net.Dial("unix", d.Socket)
		if err != nil {
			return false
		}
		defer c.Close()
		fatal, _, _ := readFatal(t, c)
		return fatal != nil && fatal["code"] == "too_many_clients"
	}, 10*time.Second, 10*time.Millisecond)

	c := newClient(t, d, "echo", func(cfg *client.Config) { cfg.Timeout = 500 * time.Millisecond })
	_, err = c.Ping(ctxT(t))
	require.ErrorIs(t, err, client.ErrUnreachable)
	assert.NotErrorIs(t, err, client.ErrProtocol)
	assert.Contains(t, err.Error(), "(max_clients)")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err = c.Call(ctx, "echo", nil, "x")
	require.ErrorIs(t, err, client.ErrUnreachable, "a checkout waits for a connection until its deadline")
	assert.Contains(t, err.Error(), "(max_clients)")

	time.AfterFunc(300*time.Millisecond, func() { hog.Close() })
	var got []string
	require.NoError(t, c.Call(ctxT(t), "echo", &got, "served"), "the client kept trying, and got the freed slot")
	assert.Equal(t, []string{"served"}, got)

	// Both reload live, for the connections accepted from then on: one more slot, and
	// silent connections closed again.
	rewrite(t, d, "max_clients: 3\nhello_timeout: 500ms\ninterfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1"))
	_, err = c.Reload(ctxT(t)) // c holds the only slot
	require.NoError(t, err)
	silent, err := net.Dial("unix", d.Socket) // a second one: served now
	require.NoError(t, err)
	defer silent.Close()
	fatal, _, _ := readFatal(t, silent)
	require.NotNil(t, fatal)
	assert.Equal(t, "hello_timeout", fatal["code"], "served, then closed for its silence")
	assert.Contains(t, fatal["msg"], "within 500ms")
}
