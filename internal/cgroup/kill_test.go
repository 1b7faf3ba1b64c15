package cgroup

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// testCgroup makes a cgroup under the cgroup2 mount for the test, removed with all below
// it when the test ends; it skips the test without root or a cgroup2 mount.
// (taskdtest.Cgroup does the same for the daemon's tests; it cannot be imported here.)
func testCgroup(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test makes a cgroup v2")
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	mount, _, ok := ParseMountinfo(mi)
	if !ok {
		t.Skip("needs a cgroup2 mount (the unified hierarchy): this host has cgroup v1 only")
	}
	dir := filepath.Join(mount, fmt.Sprintf("taskdtest-%d-cgroup-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_")))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a cgroup under %s: %v", mount, err)
	}
	t.Cleanup(func() { assert.NoError(t, RemoveTree(dir)) })
	return dir
}

// testTree is a Tree over dir without Setup (which would move the test process).
func testTree(t *testing.T, dir string) *Tree {
	tr := &Tree{log: zaptest.NewLogger(t), dir: dir, workers: filepath.Join(dir, workersDir), ifaces: map[string]*Interface{}}
	require.NoError(t, mkdir(tr.workers))
	return tr
}

// startEscaper starts, in the cgroup of fd, a shell whose child calls setsid and sleeps,
// and returns the shell and the pids in the cgroup once both are there.
func startEscaper(t *testing.T, fd int, dir string) (*exec.Cmd, []int) {
	cmd := exec.Command("/bin/sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 & exec sleep 300")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd, Setpgid: true}
	require.NoError(t, cmd.Start())
	var pids []int
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		pids = ParseProcs(b)
		return len(pids) == 2
	}, 10*time.Second, 5*time.Millisecond)
	return cmd, pids
}

func gone(pids []int) bool {
	for _, p := range pids {
		if syscall.Kill(p, 0) == nil {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p)); err == nil && !strings.Contains(string(b), ") Z ") {
				return false
			}
		}
	}
	return true
}

func TestWorkerRelease(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("needs setsid(1)")
	}
	tr := testTree(t, testCgroup(t))
	ci, err := tr.Interface("x", Limits{})
	require.NoError(t, err)
	w, err := ci.NewWorker("x-1")
	require.NoError(t, err)
	cmd, pids := startEscaper(t, w.FD(), w.Dir())
	assert.Contains(t, pids, cmd.Process.Pid, "spawned straight into the cgroup")

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	w.Release()
	w.Release() // idempotent
	assert.Eventually(t, func() bool { return gone(pids) }, 5*time.Second, 5*time.Millisecond, "the setsid grandchild is gone")
	_, err = os.Stat(w.Dir())
	assert.True(t, os.IsNotExist(err), "the cgroup is removed")

	require.NoError(t, tr.Close())
	_, err = os.Stat(tr.workers)
	assert.True(t, os.IsNotExist(err), "Close removes workers/")
	_, err = ci.NewWorker("x-2")
	assert.Error(t, err, "no worker cgroups after Close")
}

// TestKillEach is the kill of kernels before 5.14, without cgroup.kill.
func TestKillEach(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("needs setsid(1)")
	}
	dir := testCgroup(t)
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer syscall.Close(fd)
	cmd, pids := startEscaper(t, fd, dir)
	go cmd.Wait() //nolint:errcheck // reaps the shell
	require.NoError(t, killEach(dir))
	assert.Eventually(t, func() bool { return gone(pids) }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, waitEmpty(dir, 5*time.Second))
}

// TestTreeLeftovers: Close (and Setup's purge, the same code) kill what is left in worker
// cgroups and remove them.
func TestTreeLeftovers(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("needs setsid(1)")
	}
	tr := testTree(t, testCgroup(t))
	ci, err := tr.Interface("x", Limits{})
	require.NoError(t, err)
	w, err := ci.NewWorker("x-1")
	require.NoError(t, err)
	cmd, pids := startEscaper(t, w.FD(), w.Dir())
	go cmd.Wait() //nolint:errcheck // reaps the shell
	n, err := tr.purgeLeftovers()
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Eventually(t, func() bool { return gone(pids) }, 5*time.Second, 5*time.Millisecond)
	w.Release()
}
