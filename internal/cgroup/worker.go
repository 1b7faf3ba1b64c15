package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Interface is the cgroup of one interface, the parent of its workers' cgroups. Safe for
// concurrent use.
type Interface struct {
	t    *Tree
	name string
	dir  string

	// Guarded by t.mu.
	limits  Limits
	workers map[*Worker]struct{}
}

// make creates the interface's cgroup if it is not there, with memory and pids enabled
// for its workers' cgroups (where the tree has them).
func (i *Interface) make() error {
	if err := mkdir(i.dir); err != nil {
		return err
	}
	for _, c := range i.t.enabled {
		if c == "cpu" {
			continue // cpu.weight is the interface's, not its workers'
		}
		if err := write(i.dir, "cgroup.subtree_control", "+"+c); err != nil {
			return err
		}
	}
	return nil
}

// SetLimits applies l: cpu.weight on the interface's cgroup at once, memory.max and
// pids.max on the cgroup of each of its workers at once and of every worker made later.
// A memory.max below what a worker uses makes the kernel reclaim, then OOM-kill it. Limits
// whose controller is not enabled are skipped (see Tree.Missing). It returns the writes
// that failed.
func (i *Interface) SetLimits(l Limits) error {
	i.t.mu.Lock()
	i.limits = l
	ws := make([]*Worker, 0, len(i.workers))
	for w := range i.workers {
		ws = append(ws, w)
	}
	i.t.mu.Unlock()
	// The writes come after the lock: lowering memory.max reclaims memory synchronously.
	var errs []error
	if slices.Contains(i.t.enabled, "cpu") {
		weight := l.CPUWeight
		if weight <= 0 {
			weight = defaultCPUWeight
		}
		errs = append(errs, write(i.dir, "cpu.weight", strconv.Itoa(weight)))
	}
	for _, w := range ws {
		errs = append(errs, i.t.limit(w.dir, l))
	}
	return errors.Join(errs...)
}

// defaultCPUWeight is the kernel's cpu.weight of a new cgroup.
const defaultCPUWeight = 100

// limit writes the per-worker limits of l to the cgroup dir.
func (t *Tree) limit(dir string, l Limits) error {
	var errs []error
	if slices.Contains(t.enabled, "memory") {
		errs = append(errs, write(dir, "memory.max", maxValue(l.MemoryMax)))
		if l.MemoryMax > 0 {
			// A worker over memory.max is killed whole, grandchildren and all, not one
			// process of it picked by the OOM killer.
			errs = append(errs, write(dir, "memory.oom.group", "1"))
		}
	}
	if slices.Contains(t.enabled, "pids") {
		errs = append(errs, write(dir, "pids.max", maxValue(l.PidsMax)))
	}
	return errors.Join(errs...)
}

func maxValue(n int64) string {
	if n <= 0 {
		return "max"
	}
	return strconv.FormatInt(n, 10)
}

// NewWorker makes the cgroup of worker id, with the interface's limits, and opens its
// directory for CLONE_INTO_CGROUP. The caller owns the Worker: it must call Release once,
// when the worker process has been reaped (or was never started).
func (i *Interface) NewWorker(id string) (*Worker, error) {
	i.t.mu.Lock()
	closed, l := i.t.closed, i.limits
	i.t.mu.Unlock()
	if closed {
		return nil, errors.New("cgroup: the tree is closed (taskd is stopping)")
	}
	w := &Worker{i: i, dir: filepath.Join(i.dir, dirName(id))}
	if err := os.Mkdir(w.dir, 0o755); err != nil {
		return nil, fmt.Errorf("making cgroup %s: %w", w.dir, err)
	}
	fail := func(err error) (*Worker, error) {
		_ = unix.Rmdir(w.dir)
		return nil, err
	}
	if err := i.t.limit(w.dir, l); err != nil {
		return fail(err)
	}
	fd, err := unix.Open(w.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("opening cgroup %s: %w", w.dir, err))
	}
	w.fd = fd
	i.t.mu.Lock()
	i.workers[w] = struct{}{}
	l2 := i.limits
	i.t.mu.Unlock()
	if l2 != l { // SetLimits ran meanwhile and did not see this worker
		if err := i.t.limit(w.dir, l2); err != nil {
			w.Release()
			return nil, err
		}
	}
	return w, nil
}

// Worker is the cgroup of one worker process. Safe for concurrent use.
type Worker struct {
	i    *Interface
	dir  string
	fd   int
	once sync.Once
}

// FD returns the descriptor of the cgroup's directory, for SysProcAttr.CgroupFD; it is
// valid until Release.
func (w *Worker) FD() int { return w.fd }

// Dir returns the cgroup's directory.
func (w *Worker) Dir() string { return w.dir }

// Release kills every process still in the cgroup — the children and grandchildren of
// the worker, also those that left its process group or session — waits until they are
// gone, and removes the cgroup. Call it once the worker process has been reaped; later
// calls do nothing. What fails is logged: the cgroup then stays, and the next taskd
// removes it.
func (w *Worker) Release() {
	w.once.Do(func() {
		if err := remove(w.dir); err != nil {
			w.i.t.log.Warn("worker cgroup not removed", zap.String("interface", w.i.name), zap.Error(err))
		}
		_ = unix.Close(w.fd)
		w.i.t.mu.Lock()
		delete(w.i.workers, w)
		w.i.t.mu.Unlock()
	})
}
