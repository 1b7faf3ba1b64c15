// Package bench generates load against taskd and measures it: a latency histogram, a
// driver that runs callers for a duration or a number of calls, and the side-by-side suite
// behind `make bench` (cmd/taskd-bench), which compares taskd with the same echo worker
// driven directly over its pipes.
//
// The histogram and the driver are also what `taskctl bench` uses. The suite reads
// /proc for CPU time and memory, so it runs on Linux only. It starts processes (a taskd,
// echo workers) and always stops and reaps them before it returns.
//
// Nothing here is safe for concurrent use unless it says so.
package bench
