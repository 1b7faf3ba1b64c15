package server_test

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// workerCopy copies this test binary into a new directory that every user may enter, so
// that a worker started as another user can run it (go test's own directory is private
// to root). It returns the directory and the copy's path; both go when the test ends.
func workerCopy(t *testing.T) (dir, bin string) {
	t.Helper()
	return publicCopy(t, os.Args[0])
}

// publicCopy copies the executable at path as workerCopy does.
func publicCopy(t *testing.T, path string) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "taskd-iso-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	src, err := os.Open(path)
	require.NoError(t, err)
	defer src.Close()
	bin = filepath.Join(dir, "worker")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
	return dir, bin
}

// procStatus returns the fields of /proc/PID/status, such as "Uid" or "Umask".
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	fields := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return fields
}

// procLimits returns the soft and hard limit of each line of /proc/PID/limits, keyed by
// its name ("Max open files"), as "SOFT HARD".
func procLimits(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	require.NoError(t, err)
	limits := map[string]string{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if len(line) < 26 {
			continue
		}
		vals := strings.Fields(line[26:])
		if len(vals) >= 2 {
			limits[strings.TrimSpace(line[:26])] = vals[0] + " " + vals[1]
		}
	}
	return limits
}

func isoYAML(name, dir, bin, extra string) string {
	return fmt.Sprintf("  %s:\n    command: [%q]\n    dir: %q\n    env: {TASKD_TEST_WORKER: raw, GORACE: \"atexit_sleep_ms=0\"}\n    min_idle: 1\n%s",
		name, bin, dir, extra)
}

// TestIsolatedWorkers: a worker of an interface with user, umask and rlimits runs as
// that user with the user's groups only (none of root's), with HOME, USER and LOGNAME
// set to the user's, the umask, no_new_privs, and each rlimit as soft and hard limit (a
// Go worker's runtime does not raise nofile past it). A worker of an interface without
// them runs as taskd's user but with no_new_privs too. A reload that changes user rolls
// a new generation of workers as the new user; no worker outlives the daemon.
func TestIsolatedWorkers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: taskd starts workers as another user only when it runs as root")
	}
	nobody, err := user.Lookup("nobody")
	require.NoError(t, err)
	daemonUser, err := user.Lookup("daemon")
	require.NoError(t, err)
	nobodyGroups, err := nobody.GroupIds()
	require.NoError(t, err)

	dir, bin := workerCopy(t)
	iso := func(u string) string {
		return isoYAML("iso", dir, bin, "    user: "+u+"\n    umask: \"0027\"\n"+
			"    rlimits: {nofile: 200, nproc: 4000, as: 64GiB, cpu: 1h, core: 0, fsize: 1GiB}\n")
	}
	plain := isoYAML("plain", dir, bin, "")
	d := taskdtest.Start(t, "interfaces:\n"+iso("nobody")+plain)
	c := newClient(t, d, "iso")

	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	p := pid(t, co)
	call := func(m string, r any) error { return co.Call(ctxT(t), m, r) }
	assert.Equal(t, nobody.HomeDir, envOf(t, call, "HOME"))
	assert.Equal(t, "nobody", envOf(t, call, "USER"))
	assert.Equal(t, "nobody", envOf(t, call, "LOGNAME"))
	var env []string
	require.NoError(t, call("env", &env))
	assert.NotContains(t, strings.Join(env, "\n"), "sandbox", "nothing of the helper reaches the worker")

	st := procStatus(t, p)
	ids := func(id string) string { return strings.TrimSpace(strings.Repeat(id+" ", 4)) }
	assert.Equal(t, ids(nobody.Uid), st["Uid"], "real, effective, saved and file-system uid")
	assert.Equal(t, ids(nobody.Gid), st["Gid"])
	assert.Equal(t, strings.Join(nobodyGroups, " "), st["Groups"], "the user's own groups, none of root's")
	assert.Equal(t, "0027", st["Umask"])
	assert.Equal(t, "1", st["NoNewPrivs"])
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
	require.NoError(t, err)
	assert.Equal(t, bin+"\x00", string(cmdline), "the worker's own argv, not the helper's")

	lim := procLimits(t, p)
	assert.Equal(t, "200 200", lim["Max open files"], "soft = hard: the Go runtime had nothing to raise")
	assert.Equal(t, "4000 4000", lim["Max processes"])
	assert.Equal(t, fmt.Sprint(int64(64)<<30, " ", int64(64)<<30), lim["Max address space"])
	assert.Equal(t, "3600 3600", lim["Max cpu time"])
	assert.Equal(t, "0 0", lim["Max core file size"])
	assert.Equal(t, fmt.Sprint(1<<30, " ", 1<<30), lim["Max file size"])

	// Without isolation keys: taskd's own user, but no_new_privs all the same.
	var plainPID int
	require.NoError(t, newClient(t, d, "plain").Call(ctxT(t), "pid", &plainPID))
	pst := procStatus(t, plainPID)
	assert.Equal(t, ids("0"), pst["Uid"])
	assert.Equal(t, "1", pst["NoNewPrivs"])

	// A reload that changes user rolls a new generation; the held checkout keeps its
	// worker, which retires when released.
	rewrite(t, d, "interfaces:\n"+iso("daemon")+plain)
	rep, err := c.Reload(ctxT(t))
	require.NoError(t, err)
	assert.Equal(t, client.InterfaceChange{Name: "iso", Change: client.ChangeNewGeneration, Keys: []string{"user"}, Generation: 2}, change(t, rep, "iso"))
	var p2 int
	require.NoError(t, c.Call(ctxT(t), "pid", &p2))
	assert.Equal(t, ids(daemonUser.Uid), procStatus(t, p2)["Uid"])
	assert.Equal(t, p, pid(t, co))
	co.Release()
	taskdtest.RequireGone(t, []int{p}, 10*time.Second)

	var all []int
	for _, name := range []string{"iso", "plain"} {
		for _, w := range status(t, c, name).Workers {
			all = append(all, w.PID)
		}
	}
	require.NoError(t, d.Stop(30*time.Second))
	taskdtest.RequireGone(t, all, 10*time.Second)
}

// TestIsolatedWorkerCannotStart: a worker whose program its user may not run fails to
// start with the reason from the helper (and the kernel) in the error, not a hang.
func TestIsolatedWorkerCannotStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: taskd starts workers as another user only when it runs as root")
	}
	dir, bin := workerCopy(t)
	require.NoError(t, os.Chmod(bin, 0o700)) // root's alone
	d := taskdtest.Start(t, "interfaces:\n"+isoYAML("iso", dir, bin, "    user: nobody\n    umask: \"0077\"\n"))
	err := newClient(t, d, "iso").Call(ctxT(t), "pid", nil)
	require.Error(t, err)
	assert.ErrorIs(t, err, client.ErrUnavailable)
	assert.Contains(t, err.Error(), "permission denied")
}

// TestCheckConfigRefusesUserWhenNotRoot: `taskd --check-config`, run as a user other
// than root, refuses user with the key's line and says why and what to do.
func TestCheckConfigRefusesUserWhenNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it runs taskd --check-config as nobody")
	}
	nobody, err := user.Lookup("nobody")
	require.NoError(t, err)
	dir, bin := publicCopy(t, taskdtest.Binary(t, "cmd/taskd"))
	cfg := filepath.Join(dir, "taskd.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("interfaces:\n  iso:\n    command: [w]\n    user: nobody\n"), 0o644))
	uid, err := strconv.ParseUint(nobody.Uid, 10, 32)
	require.NoError(t, err)
	gid, err := strconv.ParseUint(nobody.Gid, 10, 32)
	require.NoError(t, err)
	cmd := exec.Command(bin, "--check-config", "-c", cfg)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "%s", out)
	assert.Equal(t, 1, ee.ExitCode())
	assert.Contains(t, string(out), fmt.Sprintf("line 4: interfaces.iso.user: taskd is not running as root (euid %d), "+
		"so it cannot start workers as another user or group — run taskd as root (docs/security.md has the systemd drop-in), "+
		"or remove user and group", uid))
}
