// Package procfs is where taskd reads Linux's /proc: the state, flags, pending signals
// and CPU time of a process (/proc/PID/stat), its children, its resident memory, and the
// host's CPU model and kernel release. No other package opens a file under /proc.
//
// ParseStat is the one parser of /proc/PID/stat. It does not allocate, and neither does
// StatFile.Dying, which keeps the file open and reads it with one pread: it is how a
// worker's liveness probe sees that a process is on its way out, on every checkout of an
// idle worker (see internal/worker). The other functions read a file afresh each time;
// they serve tests and the benchmark.
//
// The package has no global state. Everything in it is safe for concurrent use.
package procfs
