// Package crash is taskd's answer to a panic in one of its own goroutines: log it with its
// stack through the daemon's logger, then exit with status 2, as an unrecovered panic does.
//
// taskd is crash-only about its own bugs. A panic may leave a lock held or a checkout half
// updated, and a daemon that carried on would serve from that state: it is safer to stop at
// once and let the service manager start a clean one (Restart=on-failure). Workers die with
// taskd (they get a parent-death signal), the socket is kept by systemd's socket unit (or
// replaced as stale at the next start), and pkg/client resends only the requests that never
// reached taskd. What this package adds to Go's own crash is that the panic reaches the log
// as one structured entry, where operators look, instead of bare text on stderr.
package crash
