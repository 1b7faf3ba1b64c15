//go:build !unix

package worker

import "io"

// Without unix there are no leases: these stand-ins are never used (Run fails first).
type control struct{}

func (c *control) read(s *server, done chan struct{}) { close(done) }
func (c *control) send([]byte) error                  { return nil }
func (c *control) stop()                              {}

func interruptible(io.Reader) bool { return true }

func leaseEndpoints() (*control, *statsPage, error) { return nil, nil, nil }
