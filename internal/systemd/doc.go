// Package systemd is taskd's side of systemd's service protocol: sd_notify (READY=1 with a
// STATUS= summary kept fresh, STOPPING=1) and a watchdog that sends WATCHDOG=1 only after
// health checks of the running server pass (server.Probes). Socket activation is the
// server's (Server.Inherit, fed by go-systemd's activation package in taskd's main).
//
// Outside systemd every notification is a no-op. The loops started here (the STATUS=
// refresh, the watchdog and its one round in flight) end when their context does, and
// Notifier.Wait waits for them.
package systemd
