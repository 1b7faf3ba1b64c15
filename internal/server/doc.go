// Package server is the taskd daemon: it turns a config.Config into listeners and one
// pool per interface, serves the client protocol (docs/client-protocol.md) on every
// connection, and shuts down in order. Sockets that systemd passes (socket activation,
// Server.Inherit) are served in place of the `listen` addresses they are bound to, and
// left to systemd — not chmodded, replaced or unlinked — so that a restart refuses no
// connection. A tls:// listener serves TLS (tls.go): each connection does its handshake on
// a goroutine of its own, and every reload reads the certificate files again. Probes are
// the health checks that cmd/taskd runs before it feeds systemd's watchdog: a ping through
// a session of the daemon's own, and each pool's lock.
//
// Who may call what (access.go, docs/security.md): each connection's peer is identified
// once, at accept (SO_PEERCRED on a unix socket; a verified TLS certificate's names); each
// checkout request is checked against its interface's allow rule and each admin request
// against admin, never a call; hide_forbidden filters what a peer sees. Accepted
// connections are counted against max_clients and must send a request within
// hello_timeout. The rules are replaced whole by a reload and read without a lock.
//
// Ownership: Run owns everything it starts — the accept loops, one session per
// connection, accepted or a probe's (after a handshake goroutine on a tls:// listener; a
// reader goroutine, a writer goroutine, and one goroutine per checkout waiting for a
// worker), the pools, and one sweeper of held checkouts for checkout_warn_after
// (holders.go). Run returns only after all
// of them are gone and every worker process has been reaped.
//
// Shutdown (ctx cancelled, e.g. SIGTERM): stop accepting; refuse new and waiting
// checkouts with "shutting_down"; let held checkouts finish for up to shutdown_grace; then
// stop every worker (EOF, SIGTERM, SIGKILL to its process group) and close connections.
package server
