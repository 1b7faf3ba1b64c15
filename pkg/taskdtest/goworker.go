package taskdtest

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/taskd-dev/taskd/internal/sandbox"
	"github.com/taskd-dev/taskd/pkg/worker"
)

// protocolOut is, in a Go interface's worker process, the protocol's stdout (a copy of
// descriptor 1 made by init) until serveIfWorker puts it back; -1 otherwise. Only init
// and serveIfWorker use it, on the test's goroutine.
var protocolOut = -1

// init does what must happen before package testing starts:
//
//   - It makes a test binary that imports this package able to serve as the sandbox
//     helper that starts workers with a umask or rlimits (interface keys umask,
//     rlimits): the in-process daemon starts such workers through its own executable —
//     here the test binary — with a marker in argv[0] that sandbox.Main recognizes,
//     before package testing would reject the helper's arguments as test flags.
//   - In a Go interface's worker process, it moves the protocol's stdout aside and
//     points descriptor 1 at stderr until the worker is served, so that what package
//     testing prints on the way (a failure of the test before its Start call, PASS)
//     reaches taskd as stderr, which it logs and quotes when the worker does not start,
//     not as stray protocol output.
//
// In any other process it does nothing.
func init() {
	sandbox.Main()
	if InWorker() {
		if fd, err := unix.FcntlInt(1, unix.F_DUPFD_CLOEXEC, 3); err == nil {
			if unix.Dup2(2, 1) == nil {
				protocolOut = fd
			} else {
				unix.Close(fd)
			}
		}
	}
}

// InWorker reports whether this process is a worker process of a Go interface (one that
// taskd started from this test binary; see Interface.Worker). A TestMain can use it to
// skip setup that only the tests need: a worker process runs TestMain too, then only the
// test that started it, up to its Start call. It is safe for concurrent use.
func InWorker() bool { return os.Getenv(workerEnv) != "" }

// testFunc matches the name of a function that go test runs (after its package).
var testFunc = regexp.MustCompile(`^(Test|Example|Benchmark|Fuzz)[^.]*$`)

// reexecFor returns how to start a worker process that runs test or example run again:
// this binary, with flags that select only run (a Test, Fuzz or Example function, or a
// subtest path) and none of its subtests, or only benchmark run with b.N = 1 when bench
// is set, or nothing but TestMain when run is "TestMain".
func reexecFor(run string, bench bool) (*reexec, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("needs the test binary's path to start it again as the worker: %w", err)
	}
	pattern := "^$"
	if run != "TestMain" {
		elems := strings.Split(run, "/")
		for i, e := range elems {
			elems[i] = "^" + regexp.QuoteMeta(e) + "$"
		}
		// "^$" one level down: the test's own subtests do not run in the worker process
		// (no subtest has an empty name).
		pattern = strings.Join(append(elems, "^$"), "/")
	}
	argv := []string{exe, "-test.run=" + pattern, "-test.count=1"}
	if bench {
		argv = []string{exe, "-test.run=^$", "-test.bench=" + pattern, "-test.benchtime=1x", "-test.count=1"}
	}
	return &reexec{argv: argv, run: run}, nil
}

// runName returns the name by which the worker process finds the Start call of tb
// again, and whether tb is a benchmark.
func runName(tb testing.TB) (string, bool) {
	_, bench := tb.(*testing.B)
	return tb.Name(), bench
}

// callerRun returns the name of the Test, Example, Benchmark or Fuzz function, or
// TestMain, that go test is running and that called New (directly or through helpers on
// the same goroutine), or "" if there is none.
func callerRun() (string, bool) {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	var prev string
	for {
		f, more := frames.Next()
		// The function go test calls is called by package testing (or, for TestMain,
		// by the generated main.main).
		if prev != "" && (strings.HasPrefix(f.Function, "testing.") || f.Function == "main.main") {
			return prev, strings.HasPrefix(prev, "Benchmark")
		}
		prev = ""
		// After the last dot: a package's last path element may have dots, and a
		// closure's name ends in ".funcN", which does not match.
		if name := f.Function[strings.LastIndex(f.Function, ".")+1:]; testFunc.MatchString(name) {
			prev = name
		}
		if !more {
			return "", false
		}
	}
}

// errNoRun says why a server made outside a test's own goroutine cannot have Go
// interfaces.
var errNoRun = errors.New("needs to know which function go test is running, to run it again in the worker process, and New finds it on the call stack: " +
	"call New from TestMain or an Example, Test or Benchmark function itself (or helpers it calls), not from a subtest's function or a goroutine; in tests and subtests, use Start(t, ...)")

// seen records, per running test, the Go interfaces its Start calls have had, so that
// a second Start of the same test with the same Go interface name is refused: its
// worker processes would serve the first one's methods. Guarded by seenMu; an entry is
// removed when its test ends.
var (
	seenMu sync.Mutex
	seen   = map[testing.TB]map[string]bool{}
)

// claim records the Go interfaces of cfg for tb, or says which one an earlier Start of
// the same test had already.
func claim(tb testing.TB, cfg Config) error {
	seenMu.Lock()
	defer seenMu.Unlock()
	names, ok := seen[tb]
	if !ok {
		names = map[string]bool{}
		seen[tb] = names
		tb.Cleanup(func() {
			seenMu.Lock()
			delete(seen, tb)
			seenMu.Unlock()
		})
	}
	for name, in := range cfg.Interfaces {
		if in.isGo() && names[name] {
			return fmt.Errorf("taskdtest: %s already started a server with a Go interface named %q: its worker processes would serve that server's methods; "+
				"give the Go interfaces of one test distinct names, or start the second server in a subtest", tb.Name(), name)
		}
	}
	for name, in := range cfg.Interfaces {
		if in.isGo() {
			names[name] = true
		}
	}
	return nil
}

// serveIfWorker is the first thing Start and New do: in a worker process started for
// Go interface iface of the first Start or New of test run that has one of that name,
// it serves that interface and exits. It returns in any other process, and in a worker
// process for another Start or New (a parent test's, or an earlier one of the same
// test), which then starts its server as the test does: the test's code between that
// server's Start and the one to serve may use it.
func serveIfWorker(run string, cfg Config) {
	iface := os.Getenv(workerEnv)
	in, ok := cfg.Interfaces[iface]
	if iface == "" || os.Getenv(runEnv) != run || !ok || !in.isGo() {
		return
	}
	// The servers the test started on its way here are done with: the rest of the
	// test never runs in this process.
	closeLive()
	if protocolOut >= 0 {
		if err := unix.Dup2(protocolOut, 1); err != nil {
			fmt.Fprintf(os.Stderr, "taskdtest: restoring the worker's stdout: %v\n", err)
			os.Exit(1)
		}
		unix.Close(protocolOut)
		protocolOut = -1
	}
	// The process exists to serve the worker: when the protocol ends, so does it, and
	// the rest of the test never runs here.
	if err := worker.Run(in.Worker); err != nil {
		fmt.Fprintf(os.Stderr, "taskdtest: Go interface %q of %s: %v\n", iface, run, err)
		os.Exit(1)
	}
	os.Exit(0)
}
