// Package taskdtest runs real taskd daemons and real worker processes for tests, the way
// net/http/httptest runs real servers.
//
// Start builds the taskd binary (once per test process), writes a config into a fresh
// temporary directory, starts the daemon on a private unix socket, and waits for the
// daemon's systemd READY=1 notification on a private notify socket. Cleanup stops the
// daemon with SIGTERM and fails the test if any of its worker processes outlives it.
//
// Worker modes: a test package that calls MaybeRunWorker first thing in its TestMain can use
// its own test binary as a worker process (WorkerYAML), in modes that behave well or
// badly on purpose (crash, hang, print garbage, never get ready...), as os/exec's tests do.
//
// Nothing here is safe for use outside tests.
package taskdtest
