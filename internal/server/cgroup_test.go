package server_test

import (
	"os"
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

// Worker cgroups: taskd started in a cgroup of its own (taskdtest.Cgroup, the stand-in
// for systemd's Delegate=yes) puts each worker in a cgroup of its own and kills it whole.

// cgroupOf returns the cgroup v2 path of pid ("/taskdtest-1-1/workers/cg/cg-1").
func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	require.NoError(t, err)
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	t.Fatalf("pid %d has no cgroup v2 entry:\n%s", pid, b)
	return ""
}

// startInCgroup starts taskd in a fresh test cgroup and returns the daemon and the cgroup's
// directory and path (relative to the cgroup2 mount).
func startInCgroup(t *testing.T, yaml string) (*taskdtest.Daemon, string, string) {
	t.Helper()
	dir, f := taskdtest.Cgroup(t)
	d := taskdtest.StartWith(t, yaml, taskdtest.Options{Wait: true, Cgroup: f})
	return d, dir, "/" + filepath.Base(dir)
}

// orphan checks out a worker of c, has it double-fork a grandchild that calls setsid,
// and returns the worker and the grandchild's pid; the checkout is released.
func orphan(t *testing.T, c *client.Client) (client.WorkerInfo, int) {
	t.Helper()
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	var gc int
	require.NoError(t, co.Call(ctxT(t), "orphan", &gc))
	w := co.Worker()
	co.Release()
	require.True(t, taskdtest.Alive(gc), "the grandchild %d runs", gc)
	require.NotContains(t, taskdtest.Descendants(w.PID), gc, "the grandchild's parent has exited: it is not the worker's descendant")
	return w, gc
}

func TestCgroupWorkersInOwnCgroups(t *testing.T) {
	d, dir, rel := startInCgroup(t, "interfaces:\n"+taskdtest.WorkerYAML("cg", "raw", "min_idle: 2"))
	c := newClient(t, d, "cg")
	require.Eventually(t, func() bool { return status(t, c, "cg").Idle == 2 }, 20*time.Second, 5*time.Millisecond)

	assert.Equal(t, rel+"/supervisor", cgroupOf(t, d.PID()), "taskd moved itself into its supervisor leaf")
	seen := map[string]bool{}
	for _, w := range status(t, c, "cg").Workers {
		cg := cgroupOf(t, w.PID)
		assert.Equal(t, rel+"/workers/cg/"+w.ID, cg, "worker %s runs in its own cgroup", w.ID)
		assert.False(t, seen[cg], "one cgroup per worker")
		seen[cg] = true
		procs, err := os.ReadFile(filepath.Join(dir, "workers/cg", w.ID, "cgroup.procs"))
		require.NoError(t, err)
		assert.Equal(t, strconv.Itoa(w.PID), strings.TrimSpace(string(procs)), "the worker alone is in its cgroup")
	}
	assert.Contains(t, d.Logs(), "cgroups on: each worker runs in a cgroup of its own")

	require.NoError(t, d.Stop(30*time.Second))
	_, err := os.Stat(filepath.Join(dir, "workers"))
	assert.True(t, os.IsNotExist(err), "taskd removed the workers' cgroups when it stopped (%v)", err)
}

// TestCgroupKillsGrandchild: a worker's grandchild that left its process group and
// session (double fork, setsid) dies with the worker's cgroup when the worker is killed or
// retired, and the worker's cgroup is removed.
func TestCgroupKillsGrandchild(t *testing.T) {
	for _, how := range []string{"kill", "max_checkouts"} {
		t.Run(how, func(t *testing.T) {
			extra := "min_idle: 1"
			if how == "max_checkouts" {
				extra += "\nmax_checkouts: 1"
			}
			d, dir, rel := startInCgroup(t, "interfaces:\n"+taskdtest.WorkerYAML("cg", "raw", extra))
			c := newClient(t, d, "cg")
			w, gc := orphan(t, c)
			assert.Equal(t, rel+"/workers/cg/"+w.ID, cgroupOf(t, gc), "the grandchild is in its worker's cgroup")
			if how == "kill" {
				_, err := c.KillWorker(ctxT(t), w.ID)
				require.NoError(t, err)
			} // with max_checkouts: 1 the release retired it
			taskdtest.RequireGone(t, []int{w.PID, gc}, 10*time.Second)
			require.Eventually(t, func() bool {
				_, err := os.Stat(filepath.Join(dir, "workers/cg", w.ID))
				return os.IsNotExist(err)
			}, 10*time.Second, 5*time.Millisecond, "the worker's cgroup is removed")
			// The interface still serves, from a new worker in a new cgroup.
			var pid int
			require.NoError(t, c.Call(ctxT(t), "pid", &pid))
			assert.NotEqual(t, w.PID, pid)
		})
	}
}

// TestCgroupOffGrandchildSurvives is the behaviour without a delegated cgroup (and before
// worker cgroups): taskd logs once that cgroup limits are off and why, warns for the
// interface that sets limits, serves as before — and a grandchild that left the worker's
// process group and session outlives the worker's kill. taskd runs in a cgroup named like
// a systemd service's that systemd did not delegate (no trusted.delegate attribute).
func TestCgroupOffGrandchildSurvives(t *testing.T) {
	dir, _ := taskdtest.Cgroup(t)
	svc := filepath.Join(dir, "taskd.service")
	require.NoError(t, os.Mkdir(svc, 0o755))
	f, err := os.Open(svc)
	require.NoError(t, err)
	defer f.Close()
	d := taskdtest.StartWith(t, "interfaces:\n"+taskdtest.WorkerYAML("cg", "raw", "cgroup: {pids_max: 100, memory_max: 1GiB}"),
		taskdtest.Options{Wait: true, Cgroup: f})
	c := newClient(t, d, "cg")
	w, gc := orphan(t, c)
	t.Cleanup(func() { syscall.Kill(gc, syscall.SIGKILL) })
	assert.Equal(t, "/"+filepath.Base(dir)+"/taskd.service", cgroupOf(t, w.PID), "the worker runs in taskd's own cgroup")

	_, err = c.KillWorker(ctxT(t), w.ID)
	require.NoError(t, err)
	taskdtest.RequireGone(t, []int{w.PID}, 10*time.Second)
	var pid int
	require.NoError(t, c.Call(ctxT(t), "pid", &pid), "taskd serves as without cgroups")
	assert.True(t, taskdtest.Alive(gc), "without a cgroup of its own, the grandchild of a killed worker survives")

	logs := d.Logs()
	assert.Equal(t, 1, strings.Count(logs, "cgroup limits are off"), "logged once why (and once in the interface's warning):\n%s", logs)
	assert.Contains(t, logs, "which did not delegate it (set Delegate=yes")
	assert.Equal(t, 1, strings.Count(logs, "the interface sets cgroup limits, which do not apply"), "warned once for the interface")
}

// TestCgroupCleansUpLeftovers: the worker cgroups of a taskd that was SIGKILLed — whose
// workers died with it (their parent-death signal) but whose grandchildren did not — are
// killed and removed by the next taskd started in the same cgroup. The next one starts
// in the supervisor leaf, as systemd's DelegateSubgroup=supervisor starts it.
func TestCgroupCleansUpLeftovers(t *testing.T) {
	d, dir, rel := startInCgroup(t, "interfaces:\n"+taskdtest.WorkerYAML("cg", "raw", "min_idle: 1"))
	c := newClient(t, d, "cg")
	w, gc := orphan(t, c)
	t.Cleanup(func() { syscall.Kill(gc, syscall.SIGKILL) })
	require.NoError(t, d.Signal(syscall.SIGKILL))
	<-d.Exited()
	taskdtest.RequireGone(t, []int{w.PID}, 10*time.Second)
	require.True(t, taskdtest.Alive(gc), "the grandchild outlives a SIGKILLed taskd")
	assert.Equal(t, rel+"/workers/cg/"+w.ID, cgroupOf(t, gc))

	sup, err := os.Open(filepath.Join(dir, "supervisor"))
	require.NoError(t, err)
	defer sup.Close()
	// min_idle 0: its first worker, cg-1 again, starts only at the call below.
	d2 := taskdtest.StartWith(t, "interfaces:\n"+taskdtest.WorkerYAML("cg", "raw", "min_idle: 0"),
		taskdtest.Options{Wait: true, Cgroup: sup})
	taskdtest.RequireGone(t, []int{gc}, 10*time.Second)
	_, err = os.Stat(filepath.Join(dir, "workers/cg", w.ID))
	assert.True(t, os.IsNotExist(err), "the old worker's cgroup is removed (%v)", err)
	assert.Contains(t, d2.Logs(), "killed and removed the worker cgroups a previous taskd left")
	c2 := newClient(t, d2, "cg")
	var pid int
	require.NoError(t, c2.Call(ctxT(t), "pid", &pid))
	assert.Equal(t, rel+"/workers/cg/", filepath.Dir(cgroupOf(t, pid))+"/")
}

// TestCgroupLimits: memory_max and pids_max are written to each worker's cgroup and
// cpu_weight to the interface's, and a reload changes them live, for the running workers.
// It needs the memory, pids and cpu controllers in the test's cgroup, that is, enabled in
// the cgroup2 root's cgroup.subtree_control (a host booted with the unified hierarchy).
func TestCgroupLimits(t *testing.T) {
	dir, f := taskdtest.Cgroup(t)
	have, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	require.NoError(t, err)
	for _, c := range []string{"memory", "pids", "cpu"} {
		if !strings.Contains(" "+strings.TrimSpace(string(have))+" ", " "+c+" ") {
			t.Skipf("needs the %s controller in a cgroup under the cgroup2 mount (this host offers %q: it binds the "+
				"controllers to cgroup v1); placement and cgroup.kill are tested without it", c, strings.TrimSpace(string(have)))
		}
	}
	yaml := func(mem string, pids, weight int) string {
		return "interfaces:\n" + taskdtest.WorkerYAML("cg", "raw", "min_idle: 2\ncgroup: {memory_max: "+mem+
			", pids_max: "+strconv.Itoa(pids)+", cpu_weight: "+strconv.Itoa(weight)+"}")
	}
	d := taskdtest.StartWith(t, yaml("256MiB", 64, 50), taskdtest.Options{Wait: true, Cgroup: f})
	c := newClient(t, d, "cg")
	require.Eventually(t, func() bool { return status(t, c, "cg").Idle == 2 }, 20*time.Second, 5*time.Millisecond)
	read := func(p ...string) string {
		b, err := os.ReadFile(filepath.Join(append([]string{dir, "workers", "cg"}, p...)...))
		require.NoError(t, err)
		return strings.TrimSpace(string(b))
	}
	workers := status(t, c, "cg").Workers
	for _, w := range workers {
		assert.Equal(t, strconv.Itoa(256<<20), read(w.ID, "memory.max"))
		assert.Equal(t, "64", read(w.ID, "pids.max"))
	}
	assert.Equal(t, "50", read("cpu.weight"))

	require.NoError(t, os.WriteFile(d.Config, []byte("listen: [\""+d.Addr+"\"]\nlog: {level: debug, format: json}\n"+yaml("512MiB", 0, 0)), 0o600))
	_, err = c.Reload(ctxT(t))
	require.NoError(t, err)
	for _, w := range workers {
		assert.Equal(t, strconv.Itoa(512<<20), read(w.ID, "memory.max"), "reloaded live into the running worker's cgroup")
		assert.Equal(t, "max", read(w.ID, "pids.max"), "0: no limit")
	}
	assert.Equal(t, "100", read("cpu.weight"), "0: the default weight")
	after := status(t, c, "cg").Workers
	require.Len(t, after, len(workers))
	for i := range workers {
		assert.Equal(t, workers[i].PID, after[i].PID, "no worker was restarted")
	}
}

// TestCgroupNotShared: a taskd started in a cgroup where another taskd runs does not take
// it over (it would purge the other's worker cgroups): it runs without cgroups, and says
// why.
func TestCgroupNotShared(t *testing.T) {
	d, dir, _ := startInCgroup(t, "interfaces:\n"+taskdtest.WorkerYAML("cg", "raw", "min_idle: 1"))
	c := newClient(t, d, "cg")
	var pid int
	require.NoError(t, c.Call(ctxT(t), "pid", &pid))

	f, err := os.Open(dir)
	require.NoError(t, err)
	defer f.Close()
	d2 := taskdtest.StartWith(t, "interfaces:\n"+taskdtest.WorkerYAML("cg", "raw", "min_idle: 1"), taskdtest.Options{Wait: true, Cgroup: f})
	c2 := newClient(t, d2, "cg")
	var pid2 int
	require.NoError(t, c2.Call(ctxT(t), "pid", &pid2))
	assert.Contains(t, d2.Logs(), "is not its own: process "+strconv.Itoa(d.PID())+" is in "+filepath.Join(dir, "supervisor"))
	assert.True(t, taskdtest.Alive(pid), "the first taskd's worker lives on")
	assert.Equal(t, "/"+filepath.Base(dir), cgroupOf(t, pid2), "the second taskd's worker runs in its cgroup")
}
