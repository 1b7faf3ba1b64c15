// Package wire frames and encodes the two line protocols of taskd: worker protocol v1
// (taskd ↔ worker process over stdin/stdout) and the client protocol (application or taskctl ↔
// taskd over a unix socket or TCP).
//
// Both protocols carry one JSON object per line. This package does framing and message
// shapes only: it reads and writes lines with a hard length limit (a line is refused as
// soon as it passes it) and, optionally, memory for long lines taken from a Budget shared
// by many readers; it decodes an envelope while keeping payloads (call arguments,
// results, errors, logs) as raw JSON, and checks that each message is valid UTF-8 and
// carries the fields its type requires. It starts no goroutines, holds no policy
// about what a message means, and does no I/O beyond the io.Reader/io.Writer it is given.
//
// A LineReader is owned by one goroutine; nothing in this package is safe for concurrent use
// unless it says so.
package wire
