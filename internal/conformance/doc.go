// Package conformance holds the tests that run the same scenarios through a real taskd
// against every worker implementation: the Go SDK (pkg/worker), the Python and Perl SDKs,
// and the raw Python worker from docs/worker-protocol.md, which uses no SDK at all. A
// worker implementation joins the suite by one row in the impls table
// (conformance_test.go).
//
// # The method contract
//
// Every implementation serves:
//
//	echo(args...)   → [args...]              the arguments, as received
//	""(args...)     → [args...]              a function-style call (no method name)
//	fail(msg)       → err {msg ⊇ msg, type ≠ "", trace ≠ ""}
//	pid()           → the worker's process id
//	sleep(ms)       → ms, after sleeping ms milliseconds
//	spin()          → never returns: burns CPU until killed
//	bye()           → "bye", and asks to be retired after this checkout
//	log(msg)        → true, with one "info" log record msg in the reply's logs
//
// SDK implementations also serve:
//
//	counts()        → {"setups": N, "dones": N}   setup runs, checkout-done runs
//	print(s)        → "printed", after writing s to stdout in every way the language has
//	logs()          → "logged", with records info "one", a timer "t" around warn "two",
//	                  error "three", in that order
//	wait_cancel(ms) → "cancelled" once the call is cancelled, "not cancelled" after ms
//	cancel_cleanup(path) → "cancelled" once the call is cancelled and it has written
//	                  "cleaned up" to the file path (its cleanup); waits for the cancel
//	big(n)          → a string of n "y"s
//	len(s)          → the length of s in characters
//
// The Python and Perl conformance workers (workers/) also serve the few extra methods
// that the SDKs' own tests (sdk/python/tests, sdk/perl/t) use (documented in those files),
// so one worker per language serves both suites.
//
// This package has no non-test code besides this file and the Go worker in goworker.
package conformance
