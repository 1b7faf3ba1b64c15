// Command minimal is the floor of `make bench`: a worker that speaks worker protocol v1
// with one goroutine and plain read(2) and write(2) on its stdin and stdout, and nothing
// else — no SDK, no reader goroutine, no hand-off. It answers every call, whatever its
// method, with its arguments array ("echo", as examples/echo does), ignores cancel and
// done (each call is answered before the next line is read), and exits on EOF.
//
// Lines that arrive together are answered with one write. It trusts its peer as far as a
// benchmark may: a line that is not a protocol message, or one longer than maxLine,
// ends it with a message on stderr and exit status 1.
package main

import (
	"bytes"
	"fmt"
	"os"
	"syscall"

	"github.com/taskd-dev/taskd/internal/wire"
)

const maxLine = 16 << 20

func main() {
	if err := run(0, 1); err != nil {
		fmt.Fprintln(os.Stderr, "minimal:", err)
		os.Exit(1)
	}
}

// run serves the protocol on descriptors in and out until EOF on in.
func run(in, out int) error {
	if err := writeAll(out, wire.AppendReady(nil, false)); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	var reply []byte
	have := 0 // bytes of buf holding input not yet handled
	for {
		if have == len(buf) {
			if len(buf) >= maxLine {
				return fmt.Errorf("a line longer than %d bytes", maxLine)
			}
			buf = append(buf, make([]byte, len(buf))...)
		}
		n, err := syscall.Read(in, buf[have:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading stdin: %w", err)
		}
		if n == 0 {
			return nil // EOF: exit now
		}
		have += n
		reply = reply[:0]
		start := 0
		for {
			i := bytes.IndexByte(buf[start:have], '\n')
			if i < 0 {
				break
			}
			line := buf[start : start+i]
			start += i + 1
			m, err := wire.DecodeWorkerMsg(line)
			if err != nil {
				return fmt.Errorf("line %s: %w", wire.Snippet(line), err)
			}
			if m.T == wire.TCall {
				reply = wire.AppendOK(reply, 0, m.ID, m.A, nil)
			}
		}
		have = copy(buf, buf[start:have])
		if len(reply) > 0 {
			if err := writeAll(out, reply); err != nil {
				return err
			}
		}
	}
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("writing stdout: %w", err)
		}
		b = b[n:]
	}
	return nil
}
