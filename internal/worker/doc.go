// Package worker runs one worker process and speaks worker protocol v1 to it.
//
// Start spawns the process (argv, never a shell) in its own process group with a clean
// environment, waits for its "ready" line, and returns a *Worker. The Worker relays calls
// (Call, Cancel, Done), matches replies to calls by id, interrupts calls given up (cancel,
// cancel_grace, then kill: Interrupt, interrupt.go), enforces call_timeout (by the same
// interrupt) and max_message_bytes, logs its stderr (within a StderrLimit), and reaps and
// classifies the exit: a death that taskd's own signal or EOF did not bring about is the
// worker's own (process.go, classify). It knows nothing about pools, checkouts or clients.
//
// A Worker is made of two parts, and of the goroutine that joins their ends:
//
//   - the process (process.go, stderr.go, isolation.go): spawn and environment (into its
//     cgroup, if Config.Cgroup gives one, which is killed whole once it is reaped), the user
//     it runs as and the umask and rlimits it runs under (through internal/sandbox's re-exec
//     helper), the stderr reader and the tail it keeps for error messages, Kill and Stop's
//     SIGTERM/SIGKILL escalation, reaping, exit classification, and the liveness probe
//     (waitid, and /proc/PID/stat through internal/procfs);
//   - the protocol connection (conn.go): the calls outstanding, call_timeout, the stdout
//     decoder, the stdin send queue (Cork/Uncork), cancel and done, and what the worker
//     announced (ready, pipeline, bye);
//   - the direct-lease side (direct.go), for a worker spawned with Config.Direct: its
//     control channel and stats page, the lease handed out now, call_timeout for leased
//     calls (a scan of the stats page), and the orderly end of a lease;
//   - the waiter (worker.go): reaps the process, drains both pipes, classifies the exit,
//     fails the calls still outstanding, and closes Exited.
//
// Ownership: each Worker has four goroutines (five with direct leases: the control
// reader, started by initDirect, returns at EOF on control or when the waiter closes it,
// and is waited for by the waiter, in direct.exit). Who starts each, who stops it, who waits:
//
//	goroutine            started by          returns when                       waited for by
//	stderr reader        process.start       EOF, or the waiter closes stderr   the waiter (process.drain)
//	stdout reader        conn.start          EOF, or the waiter closes stdout,  the waiter (conn.drain)
//	                                         or a line too long (worker killed)
//	send-queue writer    conn.init (sendq)   the waiter aborts the queue        the waiter (conn.drain)
//	waiter               Start               the process is reaped and all      Exited (closed last)
//	                                         of the above have returned
//
// Nobody stops the waiter: it ends by itself once the process has exited, which Kill
// and Stop bring about. Timers: call_timeout's (conn; stopped by the waiter's conn.fail),
// cancel_grace's (conn, made only by an interrupt; stopped by the last answer or conn.fail),
// Stop's escalation (process; stopped when the process is reaped), and the drain
// deadline (the waiter's). The conn never signals the process: when the worker must go
// it calls Worker.Kill. All goroutines are gone once Exited() is closed. Every method of
// Worker is safe for concurrent use.
package worker
