// Package taskdproc starts a taskd binary as a child process and stops it again: the one
// daemon launcher behind internal/taskdtest (tests) and internal/bench (`make bench`).
//
// Start writes a config file (the caller's YAML plus a `listen` on a private unix socket)
// into a directory, starts taskd with it, and waits for the daemon's systemd READY=1
// notification on a private notify socket, as systemd would (and keeps every later
// notification: STATUS=, STOPPING=1). With Options.Sockets it hands taskd listening sockets
// as systemd's socket activation does (LISTEN_FDS, LISTEN_PID). Stop sends SIGTERM, waits for
// the daemon to exit, checks that none of its worker processes outlives it, and removes the
// directory if Start made it. taskd's stdout and stderr go to a log file in that
// directory, written by taskd itself: no goroutine of the caller copies them.
//
// It does not build binaries (internal/taskdtest does, for tests; `make build` does, for the
// benchmark) and does not depend on package testing.
//
// Goroutines: Start starts two per daemon: one waits for the process, and one reads the
// notify socket (Notifications) until the first one, once the process has exited, has read
// what is left on it and closed it. Stop waits for both. A Daemon's methods are safe for
// concurrent use; its exported fields are set by Start and must not be changed.
package taskdproc
