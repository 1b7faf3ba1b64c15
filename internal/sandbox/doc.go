// Package sandbox applies what a worker process must run under that os/exec cannot give it
// — a umask and resource limits (rlimits) — and PR_SET_NO_NEW_PRIVS, before the worker's
// own program starts. The user and groups a worker runs as need none of this: os/exec's
// SysProcAttr.Credential sets them in the forked child (internal/worker does that).
//
// # Why a re-exec helper
//
// A umask and rlimits are properties of the whole process, and must be set between fork
// and exec; os/exec offers no hook there. Setting them in taskd around each spawn would
// change taskd's own umask and limits while its other goroutines create files, accept
// connections and start other workers (a lowered hard limit could never be raised
// again), and the Go runtime would undo part of it: it raises its own soft RLIMIT_NOFILE
// at start and puts the original back in every child it forks. So the worker is started
// through a helper instead: taskd's own executable (/proc/self/exe), started with an
// argv marker (argv[0] is HelperArg0, the settings follow, then the worker's path and
// argv). Main, called first thing in taskd's main (and by the test binaries that serve
// as taskd or as its workers, through taskdtest.MaybeRunWorker), recognizes the marker,
// sets the umask, each rlimit (soft and hard alike) and no_new_privs on itself, and
// execve's the worker: the worker keeps the helper's pid, process group, pipes,
// credentials and parent-death signal, so to taskd it is the process it started.
// syscall.Setrlimit also tells the Go runtime not to put its own RLIMIT_NOFILE back at
// that exec, and because soft and hard limits are equal, a Go worker's runtime has
// nothing to raise. The marker is in argv, never in the environment, so it cannot leak
// into the worker's environment; the worker's argv is its own.
//
// The helper costs a start of taskd's executable per spawn (package initialization
// included: about 25 ms on a loaded 2-core machine, see docs/security.md), so
// internal/worker uses it only for workers whose interface sets umask or rlimits
// (Spec.Empty reports when it is not needed).
//
// # no_new_privs
//
// Every worker runs with no_new_privs: a setuid or setgid program or one with file
// capabilities that it executes gains nothing. The flag is inherited by every child and
// kept across execve, so taskd sets it on itself once, at start (RestrictSelf): the
// flag is per thread and the Go runtime has started threads before main, so RestrictSelf
// sets it on the main thread and re-executes taskd once (same pid, argv and environment);
// from then on every thread, and so every worker, has it, at no cost per spawn. Under
// the shipped systemd unit (NoNewPrivileges=yes) it is set already and RestrictSelf does
// nothing. The helper sets it too, for callers that did not restrict themselves.
//
// Linux only. Nothing here starts goroutines; Wrap is safe for concurrent use.
package sandbox
