package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/internal/wire"
	"github.com/taskd-dev/taskd/pkg/client"
)

func TestMain(m *testing.M) { taskdtest.Main(m) }

func TestParseArgs(t *testing.T) {
	got := parseArgs([]string{"secret", "42", "true", "null", `"quoted"`, `{"a":[1,2]}`, "", "{broken", "9007199254740993", " 1 "})
	want := []any{
		"secret",
		json.RawMessage("42"),
		json.RawMessage("true"),
		json.RawMessage("null"),
		json.RawMessage(`"quoted"`),
		json.RawMessage(`{"a":[1,2]}`),
		"",
		"{broken",
		json.RawMessage("9007199254740993"),
		json.RawMessage(" 1 "),
	}
	assert.Equal(t, want, got)
	b, err := json.Marshal(got)
	require.NoError(t, err)
	assert.Equal(t, `["secret",42,true,null,"quoted",{"a":[1,2]},"","{broken",9007199254740993,1]`, string(b))
}

func TestRenderStatus(t *testing.T) {
	st := client.DaemonStatus{
		Version: "1.2.3", PID: 99, Uptime: 3725400 * time.Millisecond,
		Interfaces: []client.InterfaceStatus{
			{Name: "old", Generation: 1, Removed: true, Live: 1, Busy: 1, Checkouts: 2,
				Workers: []client.WorkerStatus{{ID: "old-1", PID: 4000, State: "busy", Gen: 1, Checkouts: 2, Age: 3 * time.Second}}},
			{Name: "passwd", Generation: 2, Live: 3, Idle: 1, Busy: 1, Queued: 3, Checkouts: 17,
				Exits: map[string]uint64{client.ExitMaxCheckouts: 4, client.ExitCrashed: 1, client.ExitBye: 1},
				Workers: []client.WorkerStatus{
					{ID: "passwd-1", PID: 4242, State: "busy", Gen: 1, Checkouts: 3, Age: 602200 * time.Millisecond, Method: "hash", CallRunning: 1234 * time.Millisecond},
					{ID: "passwd-2", PID: 4243, State: "idle", Gen: 2, Checkouts: 14, Age: 250 * time.Millisecond},
					{ID: "passwd-3", PID: 4244, State: "warming", Gen: 2, Age: 20 * time.Millisecond},
				}},
			{Name: "broken", Starting: 1, LastError: "exit status 1:\nTraceback (most recent call last):\n  File \"w.py\", line 1, in <module>\nImportError: no module named foo"},
		},
	}
	var buf bytes.Buffer
	require.NoError(t, renderStatus(&buf, st))
	want := `taskd 1.2.3, pid 99, up 1h2m5s

INTERFACE      GEN  LIVE  IDLE  BUSY  STARTING  QUEUED  CHECKOUTS  EXITS                            LAST ERROR
old (removed)  1    1     0     1     0         0       2          -                                -
passwd         2    3     1     1     0         3       17         max_checkouts=4 bye=1 crashed=1  -
broken         -    0     0     0     1         0       0          -                                exit status 1: Traceback (most recent call last): File "w.p…

INTERFACE  WORKER    PID   GEN  STATE    CHECKOUTS  AGE    METHOD  RUNNING FOR
old        old-1     4000  1    busy     2          3s     -       -
passwd     passwd-1  4242  1    busy     3          10m2s  hash    1.2s
passwd     passwd-2  4243  2    idle     14         250ms  -       -
passwd     passwd-3  4244  2    warming  0          20ms   -       -
`
	assert.Equal(t, want, buf.String())

	buf.Reset()
	require.NoError(t, renderStatus(&buf, client.DaemonStatus{Version: "1", Draining: true}))
	assert.Contains(t, buf.String(), "draining")
	assert.Contains(t, buf.String(), "(no interfaces)")
	assert.Contains(t, buf.String(), "no workers running")
}

func TestFmtDur(t *testing.T) {
	ms := time.Millisecond
	for d, want := range map[time.Duration]string{0: "0s", 12300 * time.Microsecond: "12ms", 1260 * ms: "1.3s", 61600 * ms: "1m2s", time.Hour: "1h0m0s"} {
		assert.Equal(t, want, fmtDur(d), "%v", d)
	}
}

func TestExitCodes(t *testing.T) {
	dir, err := os.MkdirTemp("", "tctl")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	nowhere := "unix:" + filepath.Join(dir, "none.sock")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--help"}, 0, ""},
		{[]string{"bogus"}, 2, "unknown command"},
		{[]string{"--bogus"}, 2, "unknown flag"},
		{[]string{"-o", "yaml", "ping"}, 2, "want table or json"},
		{[]string{"--timeout", "0s", "ping"}, 2, "--timeout"},
		{[]string{"ping", "extra"}, 2, "unknown command"},
		{[]string{"reload", "extra"}, 2, "unknown command"},
		{[]string{"call", "iface"}, 2, "at least 2"},
		{[]string{"--addr", "nowhere", "ping"}, 2, "want unix:"},
		{[]string{"--addr", nowhere, "ping"}, 1, "taskd unreachable"},
		{[]string{"--addr", nowhere, "--timeout", "50ms", "call", "echo", "echo"}, 1, "taskd unreachable"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb)
		assert.Equal(t, tc.code, code, "%v: %s", tc.args, errb.String())
		assert.Contains(t, errb.String(), tc.msg, "%v", tc.args)
	}
}

// miniDaemon answers ping, status, checkout, call (echo returns its first argument,
// "raise" raises) and ignores release: just enough of docs/client-protocol.md for taskctl.
// It answers the i-th reload request with reloads[i] (its id filled in), and leaves the
// reloads beyond them unanswered.
func miniDaemon(t *testing.T, reloads ...wire.ClientMsg) string {
	dir, err := os.MkdirTemp("", "tctl")
	require.NoError(t, err)
	path := filepath.Join(dir, "d.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		os.RemoveAll(dir)
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				lr := wire.NewLineReader(nc, 0)
				for {
					line, err := lr.ReadLine()
					if err != nil {
						return
					}
					m, err := wire.DecodeClientMsg(line)
					if err != nil {
						return
					}
					var r wire.ClientMsg
					if m.T == wire.TCheckout && m.Once {
						// A one-shot call: answered as a call, addressed to the request.
						m = wire.ClientMsg{T: wire.TCall, ID: m.ID, M: m.M, A: m.A}
					}
					switch m.T {
					case wire.TPing:
						r = wire.ClientMsg{T: wire.TPong, ID: m.ID, Version: "0.0.1"}
					case wire.TReload:
						mu.Lock()
						if len(reloads) == 0 {
							mu.Unlock()
							continue
						}
						r, reloads = reloads[0], reloads[1:]
						mu.Unlock()
						r.ID = m.ID
					case wire.TStatus:
						r = wire.ClientMsg{T: wire.TStatus, ID: m.ID, Status: &wire.Status{Version: "0.0.1", PID: 7,
							Interfaces: []wire.InterfaceStatus{{Name: "echo", Live: 1}}}}
					case wire.TCheckout:
						r = wire.ClientMsg{T: wire.TGranted, ID: m.ID, Co: 1, Worker: "echo-1", PID: 8, N: 1}
					case wire.TCall:
						if m.M == "raise" {
							r = wire.ClientMsg{T: wire.TErr, Co: m.Co, ID: m.ID, E: json.RawMessage(`{"msg":"boom","type":"E","trace":"line 1"}`)}
						} else {
							r = wire.ClientMsg{T: wire.TOK, Co: m.Co, ID: m.ID, R: json.RawMessage(`{"m":"` + m.M + `","a":` + string(m.A) + `}`)}
						}
					default:
						continue
					}
					b, _ := wire.AppendClientMsg(nil, &r)
					if _, err := nc.Write(b); err != nil {
						return
					}
				}
			}()
		}
	}()
	return "unix:" + path
}

func TestCommands(t *testing.T) {
	addr := miniDaemon(t)
	runOK := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"--addr", addr}, args...), &out, &errb)
		require.Equal(t, 0, code, errb.String())
		return out.String()
	}
	assert.Contains(t, runOK("ping"), "taskd 0.0.1 at "+addr)
	var ping map[string]any
	require.NoError(t, json.Unmarshal([]byte(runOK("-o", "json", "ping")), &ping))
	assert.Equal(t, "0.0.1", ping["version"])

	assert.Contains(t, runOK("status"), "echo")
	var st client.DaemonStatus
	require.NoError(t, json.Unmarshal([]byte(runOK("-o", "json", "status")), &st))
	assert.Equal(t, 7, st.PID)

	assert.Equal(t, `{"m":"hash","a":["secret",9007199254740993,{"x":[true]}]}`+"\n",
		runOK("-o", "json", "call", "passwd", "hash", "secret", "9007199254740993", `{"x":[true]}`))
	assert.Equal(t, "{\n  \"m\": \"\",\n  \"a\": []\n}\n", runOK("call", "passwd", ""))

	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--addr", addr, "call", "passwd", "raise"}, &out, &errb)
	assert.Equal(t, 1, code)
	assert.Empty(t, out.String())
	assert.Contains(t, errb.String(), "passwd.raise raised E: boom")
	assert.Contains(t, errb.String(), "line 1")
}
