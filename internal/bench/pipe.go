package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"time"

	"github.com/taskd-dev/taskd/internal/wire"
)

// pipeWorker is a worker process driven directly over its stdin and stdout, with no taskd:
// the physical floor of one hop that taskd's relay is compared with. It speaks worker
// protocol v1 as taskd would, one call at a time.
type pipeWorker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lr    *wire.LineReader
	out   []byte // the call line being built; reused
	want  []byte // the expected start of the reply; reused
	id    uint64
}

// startPipeWorker starts the worker binary at path and waits (up to timeout) for "ready".
func startPipeWorker(path string, timeout time.Duration) (*pipeWorker, error) {
	cmd := exec.Command(path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	w := &pipeWorker{cmd: cmd, stdin: stdin, lr: wire.NewLineReader(stdout, 0)}
	ready := make(chan error, 1)
	go func() { // ends when the line arrives, or when Close has reaped the worker (Wait closes the pipe)
		line, err := w.lr.ReadLine()
		if err == nil {
			var m wire.WorkerMsg
			m, err = wire.DecodeWorkerMsg(line)
			if err == nil && m.T != wire.TReady {
				err = fmt.Errorf("first line is %s, want ready", wire.Snippet(line))
			}
		}
		ready <- err
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err = <-ready:
	case <-t.C:
		w.Close()
		<-ready // the reader goroutine has returned
		return nil, fmt.Errorf("bench: starting %s directly: no ready line within %v", path, timeout)
	}
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("bench: starting %s directly: %w", path, err)
	}
	return w, nil
}

func (w *pipeWorker) PID() int { return w.cmd.Process.Pid }

// Call sends {"t":"call","id":N,"m":method,"a":args} and waits for its reply, which must be
// "ok". It checks the reply's type and id without decoding its payload (decoding the echo
// would cost the floor more than a relay has to spend).
func (w *pipeWorker) Call(method string, args json.RawMessage) error {
	w.id++
	w.out = wire.AppendCall(w.out[:0], 0, w.id, wire.NoEp, method, args)
	if _, err := w.stdin.Write(w.out); err != nil {
		return fmt.Errorf("bench: writing to the worker: %w", err)
	}
	line, err := w.lr.ReadLine()
	if err != nil {
		return fmt.Errorf("bench: reading from the worker: %w", err)
	}
	// Fast path: the Go SDK writes "t" and "id" first.
	w.want = append(strconv.AppendUint(append(w.want[:0], `{"t":"ok","id":`...), w.id, 10), ',')
	if bytes.HasPrefix(line, w.want) {
		return nil
	}
	m, err := wire.DecodeWorkerMsg(line)
	switch {
	case err != nil:
		return fmt.Errorf("bench: worker reply %s: %w", wire.Snippet(line), err)
	case m.T != wire.TOK || m.ID != w.id:
		return fmt.Errorf("bench: worker replied %s to call %d, want ok", wire.Snippet(line), w.id)
	}
	return nil
}

// Close closes the worker's stdin (which tells it to exit) and reaps it.
func (w *pipeWorker) Close() error {
	w.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- w.cmd.Wait() }()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		_ = w.cmd.Process.Kill()
		return errors.Join(errors.New("bench: worker did not exit on EOF; killed"), <-done)
	}
}
