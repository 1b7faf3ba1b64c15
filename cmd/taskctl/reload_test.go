package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/internal/wire"
	"github.com/taskd-dev/taskd/pkg/client"
)

func TestRenderReload(t *testing.T) {
	rep := client.ReloadReport{
		Interfaces: []client.InterfaceChange{
			{Name: "added", Change: client.ChangeAdded, Generation: 1},
			{Name: "broken", Change: client.ChangeFailed, Keys: []string{"command"}, Generation: 2,
				Error: "exit status 1:\nImportError: no module named foo"},
			{Name: "gone", Change: client.ChangeRemoved},
			{Name: "passwd", Change: client.ChangeNewGeneration, Keys: []string{"env", "dir"}, Generation: 3},
			{Name: "same", Change: client.ChangeUnchanged, Generation: 1},
			{Name: "thumbs", Change: client.ChangeResized, Keys: []string{"max_workers", "min_idle"}, Generation: 1},
			{Name: "vault", Change: client.ChangeAccess, Keys: []string{"allow"}, Generation: 1},
		},
		Live:         []string{"admin", "hide_forbidden"},
		NeedsRestart: []string{"listen", "socket_mode"},
	}
	var buf bytes.Buffer
	require.NoError(t, renderReload(&buf, rep))
	want := `INTERFACE  CHANGE          GEN  KEYS                  ERROR
added      added           1    -                     -
broken     FAILED          2    command               exit status 1: ImportError: no module named foo
gone       removed         -    -                     -
passwd     new generation  3    env,dir               -
same       unchanged       1    -                     -
thumbs     resized         1    max_workers,min_idle  -
vault      access changed  1    allow                 -
applied live: admin, hide_forbidden
needs restart: listen, socket_mode (changed in the file; restart taskd to apply them)
`
	assert.Equal(t, want, buf.String())

	buf.Reset()
	require.NoError(t, renderReload(&buf, client.ReloadReport{}))
	assert.Equal(t, "INTERFACE  CHANGE  GEN  KEYS  ERROR\n(no interfaces)\n", buf.String())

	require.NoError(t, reloadFailed(client.ReloadReport{Interfaces: rep.Interfaces[2:]}))
	err := reloadFailed(rep)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "new workers of broken did not start")
}

// TestReloadCommand runs taskctl reload against a daemon that answers reload: applied,
// applied with a failed interface, and refused because the file is not valid.
func TestReloadCommand(t *testing.T) {
	applied := &wire.ReloadReport{Interfaces: []wire.InterfaceChange{
		{Name: "echo", Change: wire.ChangeResized, Keys: []string{"max_workers"}, Generation: 1},
	}}
	failed := &wire.ReloadReport{Interfaces: []wire.InterfaceChange{
		{Name: "echo", Change: wire.ChangeFailed, Keys: []string{"env"}, Generation: 2, Error: "setup_timeout 10s passed"},
	}, NeedsRestart: []string{"listen"}}
	addr := miniDaemon(t,
		wire.ClientMsg{T: wire.TReloaded, Reload: applied},
		wire.ClientMsg{T: wire.TReloaded, Reload: applied},
		wire.ClientMsg{T: wire.TReloaded, Reload: failed},
		wire.ClientMsg{T: wire.TReloaded, Reload: failed},
		wire.ClientMsg{T: wire.TRefused, Code: wire.CodeInvalidConfig,
			Msg: "interfaces.echo.command: empty: want the worker's argv\nlisten: \"nowhere\": want unix:PATH or tcp://HOST:PORT"},
	)
	reload := func(args ...string) (code int, stdout, stderr string) {
		var out, errb bytes.Buffer
		code = run(context.Background(), append([]string{"--addr", addr}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}

	code, out, errs := reload("reload")
	assert.Equal(t, 0, code, errs)
	assert.Equal(t, "INTERFACE  CHANGE   GEN  KEYS         ERROR\necho       resized  1    max_workers  -\n", out)
	assert.Empty(t, errs)

	code, out, errs = reload("-o", "json", "reload")
	assert.Equal(t, 0, code, errs)
	var rep client.ReloadReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.Equal(t, client.ReloadReport{Interfaces: []client.InterfaceChange{
		{Name: "echo", Change: client.ChangeResized, Keys: []string{"max_workers"}, Generation: 1},
	}}, rep)

	code, out, errs = reload("reload")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "echo       FAILED  2    env   setup_timeout 10s passed")
	assert.Contains(t, out, "needs restart: listen (changed in the file; restart taskd to apply them)")
	assert.Contains(t, errs, "new workers of echo did not start")

	code, out, errs = reload("-o", "json", "reload")
	assert.Equal(t, 1, code, "a failed interface fails -o json too")
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.Equal(t, client.ChangeFailed, rep.Interfaces[0].Change)
	assert.Equal(t, []string{"listen"}, rep.NeedsRestart)

	code, out, errs = reload("reload")
	assert.Equal(t, 1, code)
	assert.Empty(t, out)
	assert.Contains(t, errs, "taskctl: client: reload refused: the config file is not valid; nothing changed:\n"+
		"  interfaces.echo.command: empty: want the worker's argv\n"+
		"  listen: \"nowhere\": want unix:PATH or tcp://HOST:PORT\n")

	// No answer (the daemon has none left): --timeout bounds the wait.
	code, _, errs = reload("--timeout", "50ms", "reload")
	assert.Equal(t, 1, code)
	assert.Contains(t, errs, "reload: no answer from taskd")
}

// TestReloadRealDaemon: `taskctl reload` against a real taskd whose config file was
// edited: it prints what changed and exits 0; with an invalid file it prints the problems
// and exits 1, and taskd keeps its config.
func TestReloadRealDaemon(t *testing.T) {
	yaml := func(extra string) string {
		return "interfaces:\n" + taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\n"+extra)
	}
	d := taskdtest.Start(t, yaml(""))
	write := func(y string) {
		require.NoError(t, os.WriteFile(d.Config, fmt.Appendf(nil, "listen: [%q]\n%s", d.Addr, y), 0o600))
	}
	reload := func() (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), []string{"--addr", d.Addr, "reload"}, &out, &errb)
		return code, out.String(), errb.String()
	}

	write(yaml("max_workers: 3"))
	code, out, errs := reload()
	assert.Equal(t, exitOK, code, errs)
	assert.Regexp(t, `(?m)^echo\s+resized\s+1\s+max_workers\s+-$`, out)

	// Only who may use it: reported as what it is, and the workers stay.
	pidBefore := echoPID(t, d.Addr)
	write(yaml("max_workers: 3\nallow: {uids: [" + strconv.Itoa(os.Getuid()) + "]}"))
	code, out, errs = reload()
	assert.Equal(t, exitOK, code, errs)
	assert.Regexp(t, `(?m)^echo\s+access changed\s+1\s+allow\s+-$`, out)
	assert.NotContains(t, out, "applied live")
	assert.Equal(t, pidBefore, echoPID(t, d.Addr), "no worker was touched")

	// A top-level access key: listed as applied live.
	write("hide_forbidden: true\nmax_clients: 50\n" + yaml("max_workers: 3\nallow: {uids: ["+strconv.Itoa(os.Getuid())+"]}"))
	code, out, errs = reload()
	assert.Equal(t, exitOK, code, errs)
	assert.Regexp(t, `(?m)^echo\s+unchanged\s+1\s+-\s+-$`, out)
	assert.Contains(t, out, "applied live: hide_forbidden, max_clients\n")
	code, out, errs = reload()
	assert.Equal(t, exitOK, code, errs)
	assert.NotContains(t, out, "applied live", "only what changed since the last reload")

	write(yaml("max_workers: 3\nmax_wrokers: 2"))
	code, out, errs = reload()
	assert.Equal(t, exitError, code)
	assert.Empty(t, out)
	assert.Contains(t, errs, "unknown key interfaces.echo.max_wrokers")

	var buf, errb bytes.Buffer
	require.Equal(t, exitOK, run(context.Background(), []string{"--addr", d.Addr, "-o", "json", "status"}, &buf, &errb), errb.String())
	var st client.DaemonStatus
	require.NoError(t, json.Unmarshal(buf.Bytes(), &st))
	assert.Equal(t, 3, st.Interfaces[0].MaxWorkers, "the invalid file changed nothing")
}

// echoPID returns the pid of the worker that a checkout of echo at addr gets (min_idle 1,
// so the same idle worker each time while nothing retires it).
func echoPID(t *testing.T, addr string) int {
	t.Helper()
	c, err := client.New(client.Config{Addr: addr, Interface: "echo", Timeout: 10 * time.Second})
	require.NoError(t, err)
	defer c.Close()
	var pid int
	require.NoError(t, c.Call(context.Background(), "pid", &pid))
	return pid
}
