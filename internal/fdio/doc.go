// Package fdio does the reads and writes of taskd's hot paths with raw system calls on
// non-blocking descriptors.
//
// A read or write made through the os and net packages enters the runtime's system-call
// bookkeeping, which wakes the runtime's monitor thread (sysmon) whenever the process was
// idle; a relay that wakes for every message pays for that thread's wake-up and its
// sleeps on every message. A non-blocking read or write never blocks, so it needs none of
// that: fdio makes it directly and still waits for readiness in the runtime's poller,
// through syscall.RawConn, so deadlines and Close behave as usual.
package fdio
