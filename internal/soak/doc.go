// Package soak is the chaos soak behind `make soak` (cmd/taskd-soak): it starts the real
// taskd with real workers — the Go SDK, the Python SDK and a raw worker protocol v1 worker
// — and, for a while, runs callers against it while things go wrong, then checks that
// nothing was lost, duplicated or misrouted and that nothing leaked.
//
// Callers (8–32) mix one-shot calls, held checkouts with several calls that must all reach
// the checkout's worker pid, and pipelined calls; every call carries a nonce that must come
// back exactly, and a one-shot "record" call appends its nonce to a file, so that a call
// run twice shows. Each call has a deadline; one that never returns is lost, one that
// returns more than a second past its deadline is late. Meanwhile the chaos: a random
// worker is SIGKILLed every 100ms, one is SIGSTOPped for longer than call_timeout every
// 2s or so, a worker leaks memory past max_rss and another floods its stderr, SIGHUP
// reloads a config with a changed env every 3s or so, taskd is restarted twice on the same
// (socket-activated) socket, once with SIGTERM and once with SIGKILL, a client stops
// reading its socket, and clients connect and vanish. After the chaos the callers go on
// for a few seconds: each must succeed again within 2s.
//
// Run returns a Report; Report.Write prints it as a Markdown table and one line to grep,
// "SOAK PASS ..." or "SOAK FAIL ...". The run fails unless lost, late, duplicated,
// misrouted, zombies and untyped errors are all 0, taskd's descriptors, goroutines and RSS
// after the soak are within fixed bounds of those before it (both measured with the
// workers settled at min_idle), and every caller recovered in time.
//
// A binary that uses the package must call MaybeRunWorker first thing: the Go and raw
// workers are that binary, run again with WorkerEnv set. The Python worker is worker.py
// beside this file. The package reads /proc, so it runs on Linux only. Run is not safe
// for concurrent use with itself (the chaos signals processes by pid).
package soak
