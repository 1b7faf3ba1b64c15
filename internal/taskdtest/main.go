package taskdtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/taskd-dev/taskd/internal/taskdproc"
)

// scratchPrefix names the per-process scratch directories in the temporary directory.
const scratchPrefix = "taskdtest-"

var (
	mainCalled atomic.Bool // Main is running this test binary

	scratchOnce sync.Once
	scratchDir  string   // this process's scratch directory: bin/ and the daemons' directories
	scratchLock *os.File // holds an flock on scratchDir/.lock while this process lives
	scratchErr  error

	binMu sync.Mutex // serializes builds; guards built
	built = map[string]bool{}

	liveMu sync.Mutex
	live   []*taskdproc.Daemon // every daemon started here, for Main's check; guarded by liveMu
)

// Main is the TestMain of every package whose tests use Binary, Start or StartForMain:
//
//	func TestMain(m *testing.M) { taskdtest.Main(m) }
//
// m may be wrapped in a type whose Run does more around m.Run (pkg/client's starts a
// daemon for its examples). Main runs the binary as a worker if it was started as one
// (MaybeRunWorker); otherwise it runs the tests, stops any daemon still running, removes
// this process's scratch directory (the binaries that Binary built and the daemons'
// directories), checks with goleak that no goroutine leaked, and exits. The run fails if a
// daemon was still running or the scratch directory could not be removed.
//
// A test process that dies without returning from m.Run (a panic, the -timeout of go
// test) cannot remove its scratch directory; the next test process that builds removes it.
func Main(m interface{ Run() int }) {
	MaybeRunWorker()
	mainCalled.Store(true)
	code := m.Run()
	if err := cleanup(); err != nil {
		fmt.Fprintf(os.Stderr, "taskdtest: %v\n", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// cleanup stops the daemons still running and removes the scratch directory.
func cleanup() error {
	var errs []error
	liveMu.Lock()
	daemons := live
	live = nil
	liveMu.Unlock()
	for _, d := range daemons {
		select {
		case <-d.Exited():
			continue
		default:
		}
		errs = append(errs, fmt.Errorf("taskd (pid %d, %s) was still running when the tests ended; stop it before TestMain returns", d.PID(), d.Addr))
		_ = d.Stop(10 * time.Second)
	}
	if scratchDir != "" {
		if err := os.RemoveAll(scratchDir); err != nil {
			errs = append(errs, fmt.Errorf("removing the scratch directory: %w", err))
		} else if _, err := os.Lstat(scratchDir); !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("scratch directory %s is still there after removing it (%v)", scratchDir, err))
		}
		scratchLock.Close()
	}
	return errors.Join(errs...)
}

// scratch returns this process's scratch directory, made on first use in the temporary
// directory. It is locked (flock on its .lock file) for as long as this process lives, so
// that scratch can tell the directories of dead test processes, which it removes, from
// those of live ones.
func scratch() (string, error) {
	if !mainCalled.Load() {
		return "", errors.New("taskdtest: the package's TestMain must be `taskdtest.Main(m)`, which removes what taskdtest builds and starts when the tests end")
	}
	scratchOnce.Do(func() {
		sweep()
		dir, err := os.MkdirTemp("", scratchPrefix)
		if err != nil {
			scratchErr = fmt.Errorf("taskdtest: %w", err)
			return
		}
		// Lock a file under a temporary name, then rename it into place: a .lock that
		// another process can see is always already locked.
		f, err := os.CreateTemp(dir, ".lock-")
		if err == nil {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if err == nil {
				err = os.Rename(f.Name(), filepath.Join(dir, ".lock"))
			}
			if err != nil {
				f.Close()
			}
		}
		if err != nil {
			os.RemoveAll(dir)
			scratchErr = fmt.Errorf("taskdtest: locking the scratch directory: %w", err)
			return
		}
		scratchDir, scratchLock = dir, f
	})
	return scratchDir, scratchErr
}

// sweep removes the scratch directories of test processes that died without removing
// theirs: those whose .lock nobody holds. A directory without a .lock is being made (or is
// not ours) and stays.
func sweep() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), scratchPrefix+"*"))
	for _, dir := range dirs {
		f, err := os.Open(filepath.Join(dir, ".lock"))
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			_ = os.RemoveAll(dir)
		}
		f.Close()
	}
}

// TempDir returns a new directory with a short path (unix socket paths are limited to 107
// bytes, which t.TempDir can exceed), removed when the test ends, for a socket or for
// StartWith's Options.Dir.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := scratchSub("d")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func scratchSub(prefix string) (string, error) {
	root, err := scratch()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(root, prefix)
	if err != nil {
		return "", fmt.Errorf("taskdtest: %w", err)
	}
	return dir, nil
}

// BuildForMain builds the main package name (relative to the repository root, e.g.
// "cmd/taskd" or "examples/echo") once per test process, into the scratch directory, and
// returns the binary's path. It is Binary for a TestMain, which has no testing.TB.
func BuildForMain(name string) (string, error) { return BuildTagged(name, "") }

// BuildTagged is BuildForMain with build tags (comma-separated, as go build -tags takes
// them), for binaries with test hooks built in; each set of tags is built once.
func BuildTagged(name, tags string) (string, error) {
	root, err := scratch()
	if err != nil {
		return "", err
	}
	key := name
	if tags != "" {
		key += "+" + strings.ReplaceAll(tags, ",", "+")
	}
	out := filepath.Join(root, "bin", strings.ReplaceAll(key, "/", "_"))
	binMu.Lock()
	defer binMu.Unlock()
	if built[key] {
		return out, nil
	}
	cmd := exec.Command("go", "build", "-tags", tags, "-o", out, "./"+name)
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("taskdtest: go build ./%s: %v\n%s", name, err, b)
	}
	built[key] = true
	return out, nil
}

// StartForMain runs taskd for a whole test binary, from TestMain (where Start, which needs
// a testing.TB, cannot be used): for example to serve the runnable Example functions of a
// package. yaml is the config without `listen`, as for Start. It returns once taskd is
// ready, with its address and a function that stops it (as Daemon.Stop does, allowing it
// 30s) and removes its directory; stop returns an error (quoting the daemon's log) if taskd
// did not exit cleanly or a worker outlived it. Call stop before TestMain returns:
// Main fails the run if the daemon is still running.
func StartForMain(yaml string) (addr string, stop func() error, err error) {
	d, err := start(yaml, Options{Wait: true})
	if err != nil {
		return "", nil, err
	}
	stop = func() error {
		defer os.RemoveAll(d.Dir)
		return d.Stop(30 * time.Second)
	}
	return d.Addr, stop, nil
}

// start starts a daemon for this test process: the binary built from this checkout, debug
// logs, the repository root as working directory, and (unless o.Dir) a directory of its
// own in the scratch directory, which the caller removes after stopping the daemon.
func start(yaml string, o Options) (*taskdproc.Daemon, error) {
	var err error
	bin := o.Bin
	if bin == "" {
		if bin, err = BuildForMain("cmd/taskd"); err != nil {
			return nil, err
		}
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = scratchSub("d"); err != nil {
			return nil, err
		}
	}
	d, err := taskdproc.Start(context.Background(), taskdproc.Options{
		Bin:     bin,
		YAML:    "log: {level: debug, format: json}\n" + yaml,
		Dir:     dir,
		WorkDir: RepoRoot(),
		Env:     o.Env,
		NoWait:  !o.Wait,
		Sockets: o.Sockets,
		Cgroup:  o.Cgroup,
	})
	if err != nil {
		if o.Dir == "" {
			os.RemoveAll(dir)
		}
		return nil, err
	}
	liveMu.Lock()
	live = append(live, d)
	liveMu.Unlock()
	return d, nil
}
