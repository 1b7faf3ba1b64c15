// Package taskdtest runs a real taskd daemon for the tests of code that uses taskd, the
// way net/http/httptest runs a real HTTP server for handlers. It needs nothing installed
// beyond the Go toolchain that runs go test.
//
//	func TestHash(t *testing.T) {
//		srv := taskdtest.Start(t, taskdtest.Config{Interfaces: map[string]taskdtest.Interface{
//			"passwd": {Command: []string{"python3", "testdata/passwd.py"}, YAML: "max_workers: 2"},
//			"upper": {Worker: worker.Spec{Methods: map[string]worker.Func{
//				"upper": func(ctx context.Context, c *worker.Call) (any, error) {
//					var s string
//					err := c.Args(&s)
//					return strings.ToUpper(s), err
//				},
//			}}},
//		}})
//		var got string
//		err := srv.Client("upper").Call(ctx, "upper", &got, "hi")
//		...
//	}
//
// Start returns once the daemon listens on a unix socket in a fresh temporary directory
// (Server.Addr); Server.Client gives a ready *client.Client of an interface, and
// Server.NewClient one with a config of your own. When the test ends, the daemon is
// stopped, the test fails if any of its worker processes is left (they are killed), and
// the directory is removed; if the test failed, the last lines of the daemon's log are
// logged with it. New and Server.Close do the same for TestMain and Example functions,
// which have no testing.TB.
//
// # The daemon runs in the test process
//
// The daemon is taskd's own server package, run in the test process — not the taskd
// binary. A binary would have to be on $PATH in the right version, or be built from the
// module's source with go build (which is not at hand in a module cache and costs seconds
// per test binary); in-process there is nothing to install or build, and the daemon is
// the same code, at the same version, as the pkg/client the test links. What is left out
// is what only the binary does: signals (SIGHUP reloads, SIGTERM drains: Close drains),
// systemd notification and socket activation, and no_new_privs for its workers. Worker
// processes are real child processes of the test process either way, with pipes, process
// groups, timeouts, recycling and direct leases as under the binary, and they die with
// the test process if it dies.
//
// # Interfaces
//
// An Interface is an external worker program (Command: a path or a name in $PATH, and
// its arguments; for instance a Python worker, or a Go worker you build) or Go methods
// (Worker, a worker.Spec). Env, Dir and YAML hold what the config file would say of it
// (docs/config.md); Config.YAML holds top-level keys.
//
// A Go interface's worker process is the test binary itself, started again by taskd
// with flags that run only the current test (-test.run, or -test.bench for a
// benchmark) and with variables in its environment that name the test and the
// interface. That process runs the test from the start, as go test would, until it
// reaches the same Start (or New) call, which sees the variables, serves the interface
// with worker.Run instead of starting a daemon, and exits when taskd closes its stdin. So
// no hook is needed — no TestMain, no registration — and the methods may be closures of
// the test. What it implies:
//
//   - The code of a test before its Start runs in every worker process too (as the
//     package's TestMain does, if it has one: see InWorker). Keep it cheap and free of
//     side effects outside the test's own temporary directories. Each worker has its own
//     copy of the test's variables: nothing a method does is seen by the test, except
//     through its replies (or files).
//   - The worker process must reach the Start call the same way: Start in the test's own
//     body (or in helpers it calls), not behind conditions that differ between runs, nor
//     after assertions on what the test's subtests did: the worker process runs none of
//     the subtests of the test it serves (a subtest's worker process runs its parent tests
//     up to the subtest, and the servers they start run there too, for the code that
//     uses them before the subtest, until the worker is served). A test may start
//     several servers, and subtests their own, but the Go interfaces of one test's
//     servers must have distinct names (Start says so if not). A worker process that
//     ends the test without reaching its Start call exits before it is ready: the
//     checkout fails with client.ErrUnavailable, quoting the process's stderr, where
//     package testing's report goes in a worker process (a failure before Start, say).
//     A skip is reported only as PASS there.
//   - New, which has no testing.TB, finds the function go test is running (TestMain, or
//     an Example, Test or Benchmark function) from the call stack, so it must be called
//     on that function's own goroutine.
//   - Every start of a Go worker starts the test binary, which takes a few tens of
//     milliseconds (more under -race); setup_timeout (10s) is plenty.
//
// Every worker process of a test server has TASKDTEST_SERVER, the server's id, in its
// environment, by which Close finds processes that outlived the daemon. A Go worker
// inherits the test process's environment (see Interface.Env) and also has
// TASKDTEST_WORKER and TASKDTEST_RUN, and atexit_sleep_ms=0 added to GORACE.
//
// Like the daemon, the package is for Linux only.
//
// The package's init function lets the test binary serve as the helper through which
// taskd starts workers that have a umask or rlimits, and in a Go worker process points
// stdout at stderr until the worker is served; it does nothing in any other process.
package taskdtest
