//go:build taskd_panichook

package server

// Built only with -tags taskd_panichook, for the test that proves what a panic in a daemon
// goroutine does (TestPanicInSessionIsLoggedAndExits): a client message of type "panic"
// makes the session's reader panic.
func init() {
	panicHook = func(t string) {
		if t == "panic" {
			panic(`injected by a client's "panic" message (taskd_panichook build)`)
		}
	}
}
