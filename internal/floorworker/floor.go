package floorworker

import (
	"errors"
	"io"

	"github.com/taskd-dev/taskd/internal/wire"
)

// Serve writes the ready line to out, then answers every call read from in with an "ok"
// whose result is the call's arguments, until in ends (nil) or a read or write fails.
func Serve(in io.Reader, out io.Writer) error {
	buf := wire.AppendReady(nil, true)
	if _, err := out.Write(buf); err != nil {
		return err
	}
	lr := wire.NewLineReader(in, 0)
	for {
		line, err := lr.ReadLine()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		m, err := wire.DecodeWorkerMsg(line)
		if err != nil || m.T != wire.TCall {
			continue
		}
		buf = wire.AppendOK(buf[:0], 0, m.ID, m.A, nil)
		if _, err := out.Write(buf); err != nil {
			return err
		}
	}
}
