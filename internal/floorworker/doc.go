// Package floorworker is the minimal single-goroutine echo worker: the floor that the Go
// SDK (pkg/worker) is measured against on a direct pipe. One goroutine reads a line with a
// blocking read, decodes it with the wire package, and writes the reply: no cancel, no
// logs, no pipelining rule, no stdout protection. It is a yardstick, not a worker to copy;
// cmd floor-worker (internal/floorworker/floor-worker) wraps it in a binary.
//
// Serve is not safe for concurrent use on the same reader and writer.
package floorworker
