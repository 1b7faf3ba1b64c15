// Package pool keeps the worker processes of one interface: warm idle workers (min_idle),
// a cap on live workers (max_workers), a FIFO queue of waiting checkouts (max_queue),
// recycling (max_checkouts, max_age, max_rss with jitter, idle_timeout, bye, errors; a
// replacement is started before a retiring worker is stopped), exit counts by reason, and
// spawn backoff for workers that cannot start.
//
// Locking rule: one mutex (Pool.mu) guards all pool state, and nothing slow happens while it
// is held — no process start, no pipe write, no blocking channel operation (hand-offs go to
// a waiter's buffered channel that has room by construction). Spawns run in goroutines owned
// by the pool; a waiter that gives up does not cancel a spawn: the new worker goes idle.
//
// Waiters are served first in, first out; idle workers are reused last in, first out, so
// that surplus workers stay idle long enough for idle_timeout to retire them.
//
// All methods of Pool and Lease are safe for concurrent use.
package pool
