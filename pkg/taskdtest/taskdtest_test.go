package taskdtest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/taskd-dev/taskd/internal/procfs"
	"github.com/taskd-dev/taskd/pkg/client"
	"github.com/taskd-dev/taskd/pkg/taskdtest"
	"github.com/taskd-dev/taskd/pkg/worker"
)

// TestMain only checks for leaked goroutines: taskdtest needs no hook in it (its Go
// workers' processes run through this TestMain too).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// methods is a Go worker's method table for the tests.
var methods = map[string]worker.Func{
	"upper": func(_ context.Context, c *worker.Call) (any, error) {
		var s string
		err := c.Args(&s)
		return strings.ToUpper(s), err
	},
	"pid": func(context.Context, *worker.Call) (any, error) { return os.Getpid(), nil },
	"exe": func(context.Context, *worker.Call) (any, error) { return os.Executable() },
	// sockets counts the worker's open sockets: one more on a direct lease than relayed.
	"sockets": func(context.Context, *worker.Call) (any, error) {
		fds, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			return nil, err
		}
		n := 0
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
				n++
			}
		}
		return n, nil
	},
	"getenv": func(_ context.Context, c *worker.Call) (any, error) {
		var k string
		err := c.Args(&k)
		return os.Getenv(k), err
	},
	"fail": func(context.Context, *worker.Call) (any, error) {
		return nil, worker.Errorf("TestError", "failing as asked")
	},
	"stderr": func(_ context.Context, c *worker.Call) (any, error) {
		var s string
		err := c.Args(&s)
		fmt.Fprintln(os.Stderr, s)
		return nil, err
	},
	// escape starts a process that leaves the worker's process group and session (so
	// taskd's kill of the group misses it) and returns its pid.
	"escape": func(context.Context, *worker.Call) (any, error) {
		cmd := exec.Command("sleep", "60")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		pid := cmd.Process.Pid
		go cmd.Wait() //nolint:errcheck // reaped when it dies; the worker exits first anyway
		return pid, nil
	},
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestGoWorker: a Go interface's workers are this test binary, started again by the
// in-process daemon; one-shot calls, checkouts, remote errors and direct leases work
// through the Server's clients.
func TestGoWorker(t *testing.T) {
	srv := taskdtest.Start(t, taskdtest.Config{Interfaces: map[string]taskdtest.Interface{
		"go": {Worker: worker.Spec{Methods: methods}, YAML: "max_workers: 1\nmin_idle: 1", Env: map[string]string{"GREETING": "hi"}},
	}})
	c := srv.Client("go")
	assert.Same(t, c, srv.Client("go"), "one shared client per interface")
	ctx := ctx(t)

	var up string
	require.NoError(t, c.Call(ctx, "upper", &up, "hello"))
	assert.Equal(t, "HELLO", up)

	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	var pid, again int
	require.NoError(t, co.Call(ctx, "pid", &pid))
	require.NoError(t, co.Call(ctx, "pid", &again))
	assert.Equal(t, pid, again, "a checkout's calls go to one worker")
	assert.Equal(t, co.Worker().PID, pid)
	assert.NotEqual(t, os.Getpid(), pid, "the worker is a process of its own")
	assert.Contains(t, procfs.Children(os.Getpid()), pid, "a child of the test process, which runs the daemon")
	var exe string
	require.NoError(t, co.Call(ctx, "exe", &exe))
	self, err := os.Executable()
	require.NoError(t, err)
	assert.Equal(t, self, exe, "the worker runs this test binary")

	var greeting string
	require.NoError(t, co.Call(ctx, "getenv", &greeting, "GREETING"))
	assert.Equal(t, "hi", greeting, "Interface.Env")

	var re *client.RemoteError
	require.ErrorAs(t, co.Call(ctx, "fail", nil), &re)
	assert.Equal(t, "TestError", re.Type)
	co.Release()

	// The same worker (max_workers 1), relayed and then on a direct lease: the lease is
	// one more socket in the worker while the checkout is held.
	relay, err := srv.NewClient(client.Config{Interface: "go", Direct: client.DirectOff})
	require.NoError(t, err)
	sockets := func(c *client.Client) (n int) {
		co, err := c.Checkout(ctx)
		require.NoError(t, err)
		defer co.Release()
		require.NoError(t, co.Call(ctx, "sockets", &n))
		return n
	}
	relayed := sockets(relay)
	assert.Equal(t, relayed+1, sockets(c), "a checkout of the Server's client is a direct lease")
}

// TestCommandWorker: an interface given as a command: examples/echo, built by the test.
func TestCommandWorker(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "echo")
	_, file, _, _ := runtime.Caller(0)
	build := exec.Command("go", "build", "-o", bin, "./examples/echo")
	build.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	srv := taskdtest.Start(t, taskdtest.Config{
		Interfaces: map[string]taskdtest.Interface{"echo": {Command: []string{bin}, YAML: "call_timeout: 5s"}},
		YAML:       "max_message_bytes: 1MiB",
	})
	ctx := ctx(t)
	var got []any
	require.NoError(t, srv.Client("echo").Call(ctx, "echo", &got, "a", 1.5))
	assert.Equal(t, []any{"a", 1.5}, got)
	co, err := srv.Client("echo").Checkout(ctx)
	require.NoError(t, err)
	defer co.Release()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", co.Worker().PID))
	require.NoError(t, err)
	assert.Equal(t, bin, exe)
	var re *client.RemoteError
	require.ErrorAs(t, co.Call(ctx, "fail", nil), &re)
	assert.Equal(t, "EchoError", re.Type)
}

// TestSandboxedWorker: a worker with a umask and rlimits starts through the sandbox
// helper, which is the test binary itself (the package's init serves it).
func TestSandboxedWorker(t *testing.T) {
	srv := taskdtest.Start(t, taskdtest.Config{Interfaces: map[string]taskdtest.Interface{
		"go": {Worker: worker.Spec{Methods: map[string]worker.Func{
			"limits": func(context.Context, *worker.Call) (any, error) {
				mask := syscall.Umask(0)
				syscall.Umask(mask)
				var l syscall.Rlimit
				if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
					return nil, err
				}
				return []uint64{uint64(mask), l.Cur, l.Max}, nil
			},
		}}, YAML: "umask: \"0027\"\nrlimits: {nofile: 300}"},
	}})
	var got []uint64
	require.NoError(t, srv.Client("go").Call(ctx(t), "limits", &got))
	assert.Equal(t, []uint64{0o027, 300, 300}, got)
}

// TestGoWorkerSetupFails: a Go worker whose Setup fails makes its interface unavailable,
// and the checkout's error quotes why.
func TestGoWorkerSetupFails(t *testing.T) {
	srv := taskdtest.Start(t, taskdtest.Config{Interfaces: map[string]taskdtest.Interface{
		"go": {Worker: worker.Spec{Methods: methods, Setup: func(context.Context) error {
			return errors.New("cannot open testdata/missing.db")
		}}, YAML: "min_idle: 0"},
	}})
	err := srv.Client("go").Call(ctx(t), "pid", nil)
	require.ErrorIs(t, err, client.ErrUnavailable)
	assert.Contains(t, err.Error(), `Go interface \"go\" of TestGoWorkerSetupFails: worker: setup failed: cannot open testdata/missing.db`)
}

// TestWorkerProcessMissesStart: a worker process that fails the test before it reaches
// Start does not start; the checkout's error quotes the failure, which package testing
// printed (to stderr, in a worker process).
func TestWorkerProcessMissesStart(t *testing.T) {
	if taskdtest.InWorker() {
		t.Fatal("a precondition that fails only in the worker process")
	}
	srv := taskdtest.Start(t, taskdtest.Config{Interfaces: map[string]taskdtest.Interface{
		"go": {Worker: worker.Spec{Methods: methods}, YAML: "min_idle: 0"},
	}})
	err := srv.Client("go").Call(ctx(t), "pid", nil)
	require.ErrorIs(t, err, client.ErrUnavailable)
	assert.Contains(t, err.Error(), "a precondition that fails only in the worker process")
	assert.NotContains(t, srv.Logs(), "stray stdout line")
}

// TestNothingLeftBehind: when the test that started a server ends, its workers are
// gone, and so are its socket and directory.
func TestNothingLeftBehind(t *testing.T) {
	var pids []int
	var sock string
	t.Run("server", func(t *testing.T) {
		srv := taskdtest.Start(t, taskdtest.Config{Interfaces: map[string]taskdtest.Interface{
			"go": {Worker: worker.Spec{Methods: methods}, YAML: "min_idle: 2"},
		}})
		sock = strings.TrimPrefix(srv.Addr(), "unix:")
		require.FileExists(t, sock)
		ctx := ctx(t)
		for range 3 { // three workers at once
			co, err := srv.Client("go").Checkout(ctx)
			require.NoError(t, err)
			defer co.Release()
			pids = append(pids, co.Worker().PID)
		}
	})
	require.Len(t, pids, 3)
	for _, pid := range pids {
		assert.False(t, procfs.Alive(pid), "worker %d outlived the test", pid)
	}
	assert.NoDirExists(t, filepath.Dir(sock))
}

// TestNewAndClose: a server made by New is stopped by Close, which closes its clients
// and can be called again.
func TestNewAndClose(t *testing.T) {
	srv, err := taskdtest.New(taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"go": {Worker: worker.Spec{Methods: methods}}}})
	require.NoError(t, err)
	var pid int
	require.NoError(t, srv.Client("go").Call(ctx(t), "pid", &pid))
	require.NoError(t, srv.Close())
	require.NoError(t, srv.Close())
	assert.False(t, procfs.Alive(pid))
	assert.NoDirExists(t, filepath.Dir(strings.TrimPrefix(srv.Addr(), "unix:")))
	assert.ErrorIs(t, srv.Client("go").Call(ctx(t), "pid", nil), client.ErrClosed, "clients are closed with the server")
}

// TestLeftoverProcessIsReported: a process that a worker started and that escaped
// taskd's kill of its process group fails Close, and is killed.
func TestLeftoverProcessIsReported(t *testing.T) {
	srv, err := taskdtest.New(taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"go": {Worker: worker.Spec{Methods: methods}}}})
	require.NoError(t, err)
	var pid int
	require.NoError(t, srv.Client("go").Call(ctx(t), "escape", &pid))
	require.True(t, procfs.Alive(pid))
	err = srv.Close()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "worker processes outlived taskd")
	assert.Contains(t, err.Error(), fmt.Sprintf("pid %d (sleep 60)", pid))
	require.Eventually(t, func() bool { return !procfs.Alive(pid) }, 5*time.Second, 10*time.Millisecond)
}

// TestSubtestServers: a test and its subtest each start a server whose Go interface has
// the same name; each worker serves its own server's methods. The test uses its server
// before the subtest: so does the subtest's worker process, on its way to the subtest.
func TestSubtestServers(t *testing.T) {
	say := func(s string) worker.Spec {
		return worker.Spec{Methods: map[string]worker.Func{"who": func(context.Context, *worker.Call) (any, error) { return s, nil }}}
	}
	// Last: the worker process of the subtest started the parent's server too, and
	// closed it before serving.
	t.Cleanup(func() { leftDirs(t, `"TASKDTEST_RUN": "TestSubtestServers"`) })
	parent := taskdtest.Start(t, taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"w": {Worker: say("parent")}}})
	var before string
	require.NoError(t, parent.Client("w").Call(ctx(t), "who", &before))
	require.Equal(t, "parent", before)
	t.Run("sub", func(t *testing.T) {
		sub := taskdtest.Start(t, taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"w": {Worker: say("sub")}}})
		var got string
		require.NoError(t, sub.Client("w").Call(ctx(t), "who", &got))
		assert.Equal(t, "sub", got)
	})
	var got string
	require.NoError(t, parent.Client("w").Call(ctx(t), "who", &got))
	assert.Equal(t, "parent", got)
}

// fatalRecorder is a testing.TB whose Fatal records the message and ends the
// goroutine, for a test of what Start refuses.
type fatalRecorder struct {
	*testing.T
	fatal string
}

func (r *fatalRecorder) Fatal(args ...any) {
	r.fatal = fmt.Sprint(args...)
	runtime.Goexit()
}

// TestSameGoInterfaceTwice: a second Start of one test with a Go interface of the same
// name is refused (its worker processes would serve the first server's methods).
func TestSameGoInterfaceTwice(t *testing.T) {
	r := &fatalRecorder{T: t}
	cfg := taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"w": {Worker: worker.Spec{Methods: methods}}}}
	srv := taskdtest.Start(r, cfg)
	require.NoError(t, srv.Client("w").Call(ctx(t), "pid", nil))
	done := make(chan struct{})
	go func() {
		defer close(done)
		taskdtest.Start(r, cfg)
	}()
	<-done
	assert.Contains(t, r.fatal, `TestSameGoInterfaceTwice already started a server with a Go interface named "w"`)
}

// TestConfigErrors: a bad Config is refused before anything starts, saying what to do.
func TestConfigErrors(t *testing.T) {
	goSpec := worker.Spec{Methods: methods}
	tests := []struct {
		name string
		cfg  taskdtest.Config
		want []string
	}{
		{"no interfaces", taskdtest.Config{}, []string{"Config.Interfaces is empty"}},
		{"command and worker", taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"x": {Command: []string{"w"}, Worker: goSpec}}},
			[]string{`Config.Interfaces["x"] has both a Command and a Worker`}},
		{"neither", taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"x": {Env: map[string]string{"A": "b"}}}},
			[]string{`Config.Interfaces["x"] has neither a Command nor a Worker`}},
		{"setup only", taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"x": {Worker: worker.Spec{Setup: func(context.Context) error { return nil }}}}},
			[]string{`Worker has neither Methods nor Default`}},
		{"interface YAML sets command", taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"x": {Command: []string{"w"}, YAML: "command: [v]"}}},
			[]string{`Config.Interfaces["x"].YAML sets command: use Config.Interfaces["x"].Command`}},
		{"YAML sets listen", taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"x": {Command: []string{"w"}}}, YAML: "listen: [unix:/x]"},
			[]string{"Config.YAML sets listen"}},
		{"YAML not a mapping", taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"x": {Command: []string{"w"}, YAML: "- a"}}},
			[]string{`.YAML must be YAML keys and values`}},
		{"YAML broken", taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"x": {Command: []string{"w"}, YAML: "a: [b"}}},
			[]string{`.YAML is not valid YAML`}},
		{"env sets the server id", taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"x": {Command: []string{"w"}, Env: map[string]string{"TASKDTEST_SERVER": "1"}}}},
			[]string{"sets TASKDTEST_SERVER, which the test server sets itself"}},
		{"invalid value, quoted with the config", taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"x": {Command: []string{"w"}, YAML: "max_workers: -1"}}},
			[]string{"the config made of Config is invalid", "interfaces.x.max_workers: must be ≥ 1 (got -1)", `max_workers: -1`}},
		{"unknown key", taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"x": {Command: []string{"w"}}}, YAML: "shutdown_grase: 1s"},
			[]string{"unknown key shutdown_grase"}},
	}
	t.Setenv("TASKD_ADDR", "unix:/not-for-workers")
	t.Setenv("SECRET_LOOKING", "s3cr3t-value")
	tests = append(tests, struct {
		name string
		cfg  taskdtest.Config
		want []string
	}{"Go interface: the test's environment is not quoted", taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"x": {Worker: goSpec, YAML: "max_workers: -1"}}},
		[]string{"interfaces.x.max_workers: must be ≥ 1 (got -1)", `"SECRET_LOOKING": "(from the test's environment)"`}})
	for _, tt := range tests {
		srv, err := taskdtest.New(tt.cfg)
		if !assert.Error(t, err, tt.name) {
			srv.Close()
			continue
		}
		for _, w := range tt.want {
			assert.Contains(t, err.Error(), w, tt.name)
		}
		assert.NotContains(t, err.Error(), "s3cr3t-value", tt.name)
		assert.NotContains(t, err.Error(), "TASKD_ADDR", tt.name)
	}
	leftDirs(t)
}

// TestLongTMPDIR: a TMPDIR too long for a unix socket path below it is refused with
// what to do, and nothing is left in it.
func TestLongTMPDIR(t *testing.T) {
	tmp, err := os.MkdirTemp("", "tdtlong")
	require.NoError(t, err)
	defer os.RemoveAll(tmp)
	long := filepath.Join(tmp, strings.Repeat("d", 100))
	require.NoError(t, os.Mkdir(long, 0o700))
	t.Setenv("TMPDIR", long)
	_, err = taskdtest.New(taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"x": {Command: []string{"w"}}}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "set TMPDIR to a shorter directory")
	ents, err := os.ReadDir(long)
	require.NoError(t, err)
	assert.Empty(t, ents)
}

// TestGoWorkerOffTheTestGoroutine: New cannot serve a Go interface when it is called
// from a goroutine the test started, and says why.
func TestGoWorkerOffTheTestGoroutine(t *testing.T) {
	errc := make(chan error)
	go func() {
		_, err := taskdtest.New(taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"go": {Worker: worker.Spec{Methods: methods}}}})
		errc <- err
	}()
	err := <-errc
	require.Error(t, err)
	assert.Contains(t, err.Error(), `Config.Interfaces["go"] is a Go interface (Worker), which needs to know which function go test is running`)
	assert.Contains(t, err.Error(), "use Start(t, ...)")
}

// leftDirs fails the test if a test server's directory of this process is left in the
// temporary directory (or, with a marker, one whose config has it).
func leftDirs(t *testing.T, marker ...string) {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), "taskdtest*", "taskd.yaml"))
	require.NoError(t, err)
	want := append(marker, fmt.Sprintf(`TASKDTEST_SERVER": "%d-`, os.Getpid()))[0]
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err == nil && strings.Contains(string(b), want) {
			t.Errorf("left behind: %s", filepath.Dir(d))
		}
	}
}

// TestFailureOutput runs TestFailingOnPurpose in a test process of its own: a failed
// test gets the tail of taskd's log, with its workers' stderr, and leaves nothing in the
// temporary directory.
func TestFailureOutput(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the test binary again")
	}
	tmp, err := os.MkdirTemp("", "tdtfail")
	require.NoError(t, err)
	defer os.RemoveAll(tmp)
	cmd := exec.Command(os.Args[0], "-test.run=^TestFailingOnPurpose$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, failEnv+"=1", "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "%s", out)
	assert.Contains(t, string(out), "--- FAIL: TestFailingOnPurpose")
	assert.Contains(t, string(out), "failing on purpose")
	assert.Contains(t, string(out), "taskdtest: taskd's log")
	assert.Contains(t, string(out), "a line on the worker's stderr", "the worker's stderr is in the daemon's log")
	ents, err := os.ReadDir(tmp)
	require.NoError(t, err)
	assert.Empty(t, ents, "left in the temporary directory")
}

const failEnv = "TASKDTEST_FAIL_ON_PURPOSE"

// TestFailingOnPurpose fails, for TestFailureOutput; it is skipped otherwise.
func TestFailingOnPurpose(t *testing.T) {
	if os.Getenv(failEnv) == "" {
		t.Skip("run by TestFailureOutput")
	}
	srv := taskdtest.Start(t, taskdtest.Config{Interfaces: map[string]taskdtest.Interface{
		// The worker process inherits failEnv from the test's environment, and so gets
		// past the Skip to this Start.
		"go": {Worker: worker.Spec{Methods: methods}},
	}})
	require.NoError(t, srv.Client("go").Call(ctx(t), "stderr", nil, "a line on the worker's stderr"))
	require.Eventually(t, func() bool { return strings.Contains(srv.Logs(), "a line on the worker's stderr") }, 5*time.Second, 10*time.Millisecond)
	t.Error("failing on purpose")
}

// BenchmarkGoWorkerCall measures a one-shot call to a Go interface (its worker process
// is this benchmark binary, started with -test.bench).
func BenchmarkGoWorkerCall(b *testing.B) {
	srv := taskdtest.Start(b, taskdtest.Config{Interfaces: map[string]taskdtest.Interface{"go": {Worker: worker.Spec{Methods: methods}}}})
	c := srv.Client("go")
	ctx := context.Background()
	for b.Loop() {
		if err := c.Call(ctx, "pid", nil); err != nil {
			b.Fatal(err)
		}
	}
}
