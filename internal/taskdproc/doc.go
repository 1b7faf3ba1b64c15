// Package taskdproc starts a taskd binary as a child process and stops it again: the one
// daemon launcher behind internal/taskdtest (tests) and internal/bench (`make bench`).
//
// Start writes a config file (the caller's YAML plus a `listen` on a private unix socket)
// into a directory, starts taskd with it, and waits for the daemon's systemd READY=1
// notification on a private notify socket, as systemd would. Stop sends SIGTERM, waits for
// the daemon to exit, checks that none of its worker processes outlives it, and removes the
// directory if Start made it. taskd's stdout and stderr go to a log file in that
// directory, written by taskd itself: no goroutine of the caller copies them.
//
// It does not build binaries (internal/taskdtest does, for tests; `make build` does, for the
// benchmark) and does not depend on package testing.
//
// Goroutines: Start starts one per daemon, which waits for the process and ends when it
// exits; Stop waits for that. (The one that reads the notify socket ends before Start
// returns.) A Daemon's methods are safe for concurrent use; its exported fields are set by
// Start and must not be changed.
package taskdproc
