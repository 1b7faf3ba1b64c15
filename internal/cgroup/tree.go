package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

const (
	supervisor = "supervisor" // the leaf taskd moves itself into
	workersDir = "workers"    // the parent of the interfaces' cgroups
)

// Limits are the cgroup limits of an interface's workers. The zero value of each means
// none (the kernel's default).
//
// memory.max and pids.max are set on each worker's own cgroup: they bound one worker and
// everything it starts, as max_rss does, and a worker over its memory is the one the
// kernel's OOM killer picks. cpu.weight is set on the interface's cgroup: a weight is
// relative to the cgroup's siblings, so on workers that all have the same one it would
// change nothing; on the interface it is the interface's share of the CPU against the
// other interfaces when the CPU is contended.
type Limits struct {
	MemoryMax int64 // bytes: memory.max of each worker; 0 = none
	PidsMax   int64 // pids.max of each worker; 0 = none
	CPUWeight int   // cpu.weight of the interface, 1..10000; 0 = the default, 100
}

// needs returns the controllers that l needs.
func (l Limits) needs() []string {
	var c []string
	if l.CPUWeight > 0 {
		c = append(c, "cpu")
	}
	if l.MemoryMax > 0 {
		c = append(c, "memory")
	}
	if l.PidsMax > 0 {
		c = append(c, "pids")
	}
	return c
}

// Tree is the cgroup tree taskd lays out under its delegated cgroup: itself in
// supervisor/, its workers under workers/. Make it with Setup; Close removes the workers'
// part. Safe for concurrent use.
type Tree struct {
	log     *zap.Logger
	dir     string   // the delegated cgroup
	workers string   // dir/workers
	enabled []string // the controllers enabled for the workers' cgroups

	mu     sync.Mutex
	ifaces map[string]*Interface
	closed bool
}

// Setup lays out the tree in the delegated cgroup f found: it moves the calling process
// into <dir>/supervisor (a cgroup with controllers enabled for its children may hold no
// process itself), kills and removes the worker cgroups a previous taskd left in
// <dir>/workers, and enables for the workers each controller of Controllers that f found
// available. A controller that cannot be enabled is logged and left off; the limits
// that need it are then not applied (see Missing). On error nothing is set up.
func Setup(f *Found, log *zap.Logger) (*Tree, error) {
	if log == nil {
		log = zap.NewNop()
	}
	t := &Tree{log: log, dir: f.Dir, workers: filepath.Join(f.Dir, workersDir), ifaces: make(map[string]*Interface)}
	sup := filepath.Join(f.Dir, supervisor)
	if err := mkdir(sup); err != nil {
		return nil, err
	}
	if err := write(sup, "cgroup.procs", strconv.Itoa(os.Getpid())); err != nil {
		return nil, fmt.Errorf("moving taskd into its supervisor cgroup: %w", err)
	}
	if err := mkdir(t.workers); err != nil {
		return nil, err
	}
	if n, err := t.purgeLeftovers(); err != nil {
		log.Warn("cgroups of a previous taskd's workers could not all be removed", zap.Error(err))
	} else if n > 0 {
		log.Info("killed and removed the worker cgroups a previous taskd left", zap.Int("cgroups", n))
	}
	for _, c := range f.Available {
		err := write(f.Dir, "cgroup.subtree_control", "+"+c)
		if err == nil {
			err = write(t.workers, "cgroup.subtree_control", "+"+c)
		}
		if err != nil {
			hint := ""
			if errors.Is(err, unix.EBUSY) {
				hint = fmt.Sprintf(" (processes other than taskd are in %s: a cgroup that enables controllers for its children may hold none itself)", f.Dir)
			}
			log.Warn("cgroup controller not enabled: the limits that need it are off", zap.String("controller", c),
				zap.String("error", err.Error()+hint))
			continue
		}
		t.enabled = append(t.enabled, c)
	}
	return t, nil
}

// purgeLeftovers kills and removes what is under workers/ and returns how many worker
// cgroups that was.
func (t *Tree) purgeLeftovers() (int, error) {
	ifaces, err := os.ReadDir(t.workers)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, i := range ifaces {
		if !i.IsDir() {
			continue
		}
		ws, _ := os.ReadDir(filepath.Join(t.workers, i.Name()))
		for _, w := range ws {
			if w.IsDir() {
				n++
			}
		}
		errs = append(errs, remove(filepath.Join(t.workers, i.Name())))
	}
	return n, errors.Join(errs...)
}

// Dir returns the delegated cgroup's directory.
func (t *Tree) Dir() string { return t.dir }

// Enabled returns the controllers enabled for the workers' cgroups.
func (t *Tree) Enabled() []string { return slices.Clone(t.enabled) }

// Missing returns the controllers that l needs and that are not enabled: the limits of l
// that will not apply.
func (t *Tree) Missing(l Limits) []string {
	var m []string
	for _, c := range l.needs() {
		if !slices.Contains(t.enabled, c) {
			m = append(m, c)
		}
	}
	return m
}

// Interface returns the cgroup of the interface name, made if it is not there yet, with
// limits l applied (see Interface.SetLimits).
func (t *Tree) Interface(name string, l Limits) (*Interface, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, errors.New("cgroup: the tree is closed (taskd is stopping)")
	}
	i, ok := t.ifaces[name]
	if !ok {
		i = &Interface{t: t, name: name, dir: filepath.Join(t.workers, dirName(name)), workers: make(map[*Worker]struct{})}
		t.ifaces[name] = i
	}
	t.mu.Unlock()
	if err := i.make(); err != nil {
		return nil, err
	}
	return i, i.SetLimits(l)
}

// Close kills and removes every worker cgroup still there and the cgroups of the
// interfaces; taskd's supervisor cgroup stays (taskd is in it until it exits). Workers
// made later fail. Idempotent.
func (t *Tree) Close() error {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	return remove(t.workers)
}

// dirName is the cgroup directory name of an interface or worker: the name itself, or, if
// it has a dot, "_" and the name, so that it never is "." or ".." or looks like one of the
// kernel's interface files (cgroup.procs, memory.max, ...).
func dirName(name string) string {
	if strings.Contains(name, ".") || name == "" {
		return "_" + name
	}
	return name
}

func mkdir(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("making cgroup %s: %w", dir, err)
	}
	return nil
}
