package taskdtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/taskd-dev/taskd/internal/cgroup"
	"github.com/taskd-dev/taskd/internal/procfs"
)

var cgroupSeq atomic.Int64

// Cgroup makes a cgroup v2 for the test, directly under the cgroup2 mount (the cgroup
// systemd would delegate to taskd.service with Delegate=yes), and returns its directory
// and an open descriptor of it for Options.Cgroup. It skips the test, saying what it
// needs, unless the test runs as root on a host with a cgroup2 mount it can write. When
// the test ends, every process left in the cgroup or below it is killed and all of it is
// removed; the cgroups of test processes that died without removing theirs go too.
func Cgroup(t testing.TB) (string, *os.File) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test makes a cgroup v2 to start taskd in (as systemd's Delegate=yes gives one)")
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Skipf("reading /proc/self/mountinfo: %v", err)
	}
	mount, _, ok := cgroup.ParseMountinfo(mi)
	if !ok {
		t.Skip("needs a cgroup2 mount (the unified hierarchy): this host has cgroup v1 only")
	}
	removeStale(mount)
	dir := filepath.Join(mount, fmt.Sprintf("taskdtest-%d-%d", os.Getpid(), cgroupSeq.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a cgroup under the cgroup2 mount %s: %v", mount, err)
	}
	f, err := os.Open(dir)
	if err != nil {
		os.Remove(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		if err := cgroup.RemoveTree(dir); err != nil {
			t.Errorf("removing the test's cgroup: %v", err)
		}
	})
	return dir, f
}

// removeStale removes the test cgroups of test processes that are gone.
func removeStale(mount string) {
	entries, _ := os.ReadDir(mount)
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), "taskdtest-")
		if !ok || !e.IsDir() {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		if pid, err := strconv.Atoi(pidStr); err == nil && !procfs.Alive(pid) {
			_ = cgroup.RemoveTree(filepath.Join(mount, e.Name()))
		}
	}
}
