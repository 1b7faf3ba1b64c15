package worker_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/internal/worker"
)

// fakeCgroup is a worker.Cgroup over a directory descriptor that counts its Releases.
type fakeCgroup struct {
	fd       int
	released atomic.Int32
}

func (c *fakeCgroup) FD() int  { return c.fd }
func (c *fakeCgroup) Release() { c.released.Add(1) }

// TestCgroupPlacementAndRelease: a worker with a Cgroup is started in it, and the cgroup
// is released once, after the worker has been reaped — or at once when it cannot start.
func TestCgroupPlacementAndRelease(t *testing.T) {
	dir, f := taskdtest.Cgroup(t)
	cg := &fakeCgroup{fd: int(f.Fd())}
	w, _, err := start(t, "raw", func(c *worker.Config) { c.Cgroup = cg })
	require.NoError(t, err)
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	require.NoError(t, err)
	assert.Equal(t, strconv.Itoa(w.PID()), strings.TrimSpace(string(procs)), "started in its cgroup")
	assert.Zero(t, cg.released.Load(), "not released while it runs")
	w.Kill(errors.New("test"))
	<-w.Exited()
	assert.Equal(t, int32(1), cg.released.Load(), "released once it was reaped")

	cg2 := &fakeCgroup{fd: int(f.Fd())}
	_, _, err = start(t, "raw", func(c *worker.Config) { c.Cgroup, c.Command = cg2, []string{"/nonexistent/worker"} })
	require.Error(t, err)
	assert.Equal(t, int32(1), cg2.released.Load(), "released when the spawn failed")
}
