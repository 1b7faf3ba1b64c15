// Package worker runs one worker process and speaks worker protocol v1 to it.
//
// Start spawns the process (argv, never a shell) in its own process group with a clean
// environment, waits for its "ready" line, and returns a *Worker. The Worker relays calls
// (Call, Cancel, Done), matches replies to calls by id, enforces call_timeout and
// max_message_bytes, logs every stderr line, and reaps and classifies the exit. It knows
// nothing about pools, checkouts or clients.
//
// Ownership: each Worker owns four goroutines — the stdout reader (the only reader of the
// protocol), the stderr reader, the writer of its stdin send queue (busy only when the pipe
// is full), and the waiter (which reaps the process, then waits for both pipes to drain or
// closes them, and stops the send queue). All four are gone once Exited() is closed. Every method of
// Worker is safe for concurrent use.
package worker
