// Package worker is the Go SDK for writing taskd workers: programs that taskd starts,
// keeps in a pool, and calls over worker protocol v1 (one JSON object per line on
// stdin/stdout; see docs/worker-protocol.md and docs/writing-workers.md).
//
// A worker is a table of methods handed to Run:
//
//	func main() {
//		err := worker.Run(worker.Spec{
//			Methods: map[string]worker.Func{
//				"upper": func(ctx context.Context, c *worker.Call) (any, error) {
//					var s string
//					if err := c.Args(&s); err != nil {
//						return nil, err
//					}
//					return strings.ToUpper(s), nil
//				},
//			},
//		})
//		if err != nil {
//			log.Fatal(err)
//		}
//	}
//
// What Run does for you:
//
//   - Before any of your code runs (Spec.Setup included) it moves the protocol to private,
//     close-on-exec descriptors, points descriptor 1 (and so os.Stdout, C code and child
//     processes) at stderr and descriptor 0 at /dev/null. A stray fmt.Println cannot
//     corrupt the protocol (it becomes a line in taskd's log), and a child process cannot
//     eat protocol input.
//   - Calls run one at a time, in the order taskd sent them, with a context that is
//     cancelled when taskd sends "cancel" for it or closes stdin. One goroutine reads stdin
//     (a blocking read), runs the call and writes its reply, with no hand-off to another
//     goroutine; once a call has run for one to two milliseconds, another goroutine reads
//     stdin until it returns, so that a cancel or EOF is seen within about 2 ms. A call
//     cancelled while still queued is run all the same (a reply is owed), with its context
//     already cancelled. "done" (a checkout was released) runs Spec.CheckoutDone in the
//     same order.
//   - Where taskd offers direct leases (TASKD_CONTROL_FD and TASKD_STATS_FD, on unix),
//     Run announces them and serves each lease's socket like stdin, with the same Spec;
//     every call is published in taskd's shared stats page. See docs/writing-workers.md,
//     "Direct leases".
//   - Run announces pipelining ({"t":"ready","v":1,"pipeline":true}) and applies the
//     protocol's "ep" rule, so that taskd may send a checkout's calls without waiting: a
//     call made before the application saw an earlier error of its checkout is answered
//     {"t":"aborted"} without running (no Func sees it). The count of errors starts again
//     at each "done". See docs/worker-protocol.md, "Pipelining".
//   - A returned error becomes an "err" reply carrying a message, a type and a trace (see
//     Error); a panic becomes an "err" reply of type "panic" with the goroutine's stack. The
//     worker stays usable either way.
//   - Call.Log records go to stderr and also travel back to the caller with the reply.
//   - Call.Bye asks taskd to retire the worker when the checkout ends.
//   - At EOF on stdin Run answers what it had already read, with cancelled contexts, and
//     returns nil within about a second: return from main then, taskd expects the process
//     to exit.
//
// So a worker can be tried without taskd by piping protocol lines into it:
//
//	printf '%s\n' '{"t":"call","id":1,"m":"upper","a":["hi"]}' | go run ./myworker
//
// What it does not do: it does not run calls concurrently (a worker serves one checkout and
// one call at a time, by design), it does not retry, and it does not handle signals (taskd
// stops a worker by closing stdin, then SIGTERM, then SIGKILL; Go's default SIGTERM action
// is fine). It does not wait for a Func that ignores its context once stdin has closed.
//
// The environment taskd gives a worker is exposed by Interface and ID.
package worker
