package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/taskd-dev/taskd/internal/wire"
)

// TestMain doubles as a worker process: with WORKER_TEST_HELPER set, the test binary runs
// Run on its real stdin and stdout, as os/exec's tests re-run themselves.
func TestMain(m *testing.M) {
	if mode := os.Getenv("WORKER_TEST_HELPER"); mode != "" {
		os.Exit(helperMain(mode))
	}
	goleak.VerifyTestMain(m)
}

func helperMain(mode string) int {
	if code, ok := benchHelperMain(mode); ok {
		return code
	}
	spec := Spec{Methods: map[string]Func{
		"print": func(ctx context.Context, c *Call) (any, error) {
			fmt.Println("stray line on stdout")
			fmt.Fprintln(os.Stderr, "line on stderr")
			// The child reads all of its stdin: that must not be the protocol's input.
			child := exec.CommandContext(ctx, "sh", "-c", "cat; echo line from a child process")
			child.Stdin, child.Stdout = os.Stdin, os.Stdout
			if err := child.Run(); err != nil {
				return nil, err
			}
			return "printed", nil
		},
	}}
	if mode == "setup-fails" {
		spec.Setup = func(context.Context) error {
			fmt.Println("setup printed this")
			return errors.New("cannot reach the database")
		}
	}
	if mode == "done-fails" {
		spec.CheckoutDone = func(context.Context) error { return errors.New("rollback failed") }
	}
	if err := Run(spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// helper starts the test binary as a worker in the given mode.
type helper struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *bytes.Buffer
}

func startHelper(t *testing.T, mode string, env ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "WORKER_TEST_HELPER="+mode), env...)
	h := &helper{cmd: cmd, stderr: new(bytes.Buffer)}
	cmd.Stderr = h.stderr
	var err error
	h.stdin, err = cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	h.stdout = bufio.NewReader(out)
	require.NoError(t, cmd.Start())
	kill := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() }) // a hung test fails instead
	t.Cleanup(func() {
		kill.Stop()
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return h
}

// wantReady is the ready line Run writes: it announces pipelining.
const wantReady = `{"t":"ready","v":1,"pipeline":true}` + "\n"

func TestRunProtectsStdout(t *testing.T) {
	h := startHelper(t, "serve")
	line, err := h.stdout.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, wantReady, line)

	_, err = io.WriteString(h.stdin, `{"t":"call","id":1,"m":"print"}`+"\n"+`{"t":"call","id":2,"m":"print"}`+"\n")
	require.NoError(t, err)
	for _, want := range []string{`{"t":"ok","id":1,"r":"printed"}`, `{"t":"ok","id":2,"r":"printed"}`} {
		line, err = h.stdout.ReadString('\n')
		require.NoError(t, err)
		assert.JSONEq(t, want, line)
	}

	require.NoError(t, h.stdin.Close())
	rest, err := io.ReadAll(h.stdout)
	require.NoError(t, err)
	assert.Empty(t, string(rest), "nothing but protocol on stdout")
	require.NoError(t, h.cmd.Wait(), "EOF on stdin is a clean exit; stderr:\n%s", h.stderr)
	for _, want := range []string{"stray line on stdout", "line on stderr", "line from a child process"} {
		assert.Contains(t, h.stderr.String(), want)
	}
}

func TestRunFailsBeforeReady(t *testing.T) {
	tests := []struct {
		name, mode string
		env        []string
		stderr     []string
	}{
		{"setup error", "setup-fails", nil, []string{"setup printed this", "setup failed: cannot reach the database"}},
		{"protocol version", "serve", []string{"TASKD_PROTOCOL=2"}, []string{`worker protocol "2"`}},
		{"bad max message size", "serve", []string{"TASKD_MAX_MESSAGE_BYTES=lots"}, []string{"TASKD_MAX_MESSAGE_BYTES"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHelper(t, tt.mode, tt.env...)
			out, err := io.ReadAll(h.stdout)
			require.NoError(t, err)
			assert.Empty(t, string(out), "no ready line")
			err = h.cmd.Wait()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit)
			assert.Equal(t, 1, exit.ExitCode())
			for _, want := range tt.stderr {
				assert.Contains(t, h.stderr.String(), want)
			}
		})
	}
}

func TestRunExitsWhenCheckoutDoneFails(t *testing.T) {
	h := startHelper(t, "done-fails")
	line, err := h.stdout.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, wantReady, line)
	_, err = io.WriteString(h.stdin, `{"t":"done"}`+"\n")
	require.NoError(t, err)
	// stdin stays open, as taskd keeps it: the worker exits by itself.
	err = h.cmd.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, 1, exit.ExitCode())
	assert.Contains(t, h.stderr.String(), "CheckoutDone failed")
	assert.Contains(t, h.stderr.String(), "rollback failed")
}

// harness drives serve through pipes, in the role of taskd.
type harness struct {
	t      *testing.T
	in     *io.PipeWriter
	outR   *io.PipeReader
	lines  chan []byte
	stderr *syncBuffer
	done   chan error
	err    error
	ended  bool
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// start runs serve and reads its "ready" line.
func start(t *testing.T, spec Spec) *harness {
	t.Helper()
	h := startRaw(t, spec, 1<<20)
	assert.Equal(t, strings.TrimSuffix(wantReady, "\n"), string(h.recvLine()))
	return h
}

func startRaw(t *testing.T, spec Spec, maxLine int) *harness {
	t.Helper()
	return startWith(t, spec, endpoints{maxLine: maxLine})
}

// startWith runs serveOn with e, whose in, out and stderr it fills in.
func startWith(t *testing.T, spec Spec, e endpoints) *harness {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	h := &harness{t: t, in: inW, outR: outR, lines: make(chan []byte), stderr: &syncBuffer{}, done: make(chan error, 1)}
	e.in, e.out, e.stderr = inR, outW, h.stderr
	go func() {
		err := serveOn(context.Background(), spec, e)
		outW.Close()
		h.done <- err
	}()
	go func() { // the pump: owns outR's reading side, ends when serve closes outW
		defer close(h.lines)
		lr := wire.NewLineReader(outR, 0)
		for {
			line, err := lr.ReadLine()
			if err != nil {
				return
			}
			h.lines <- bytes.Clone(line)
		}
	}()
	t.Cleanup(func() { h.wait() })
	return h
}

func (h *harness) send(lines ...string) {
	h.t.Helper()
	_, err := io.WriteString(h.in, strings.Join(lines, "\n")+"\n")
	require.NoError(h.t, err)
}

func (h *harness) recvLine() []byte {
	h.t.Helper()
	select {
	case line, ok := <-h.lines:
		require.True(h.t, ok, "serve closed its output early; stderr:\n%s", h.stderr)
		return line
	case <-time.After(10 * time.Second):
		require.FailNow(h.t, "no reply within 10s")
		return nil
	}
}

func (h *harness) recv() wire.WorkerMsg {
	h.t.Helper()
	line := h.recvLine()
	m, err := wire.DecodeWorkerMsg(line)
	require.NoError(h.t, err, "line %s", line)
	return m
}

// recvOK receives an "ok" reply to id and returns its result.
func (h *harness) recvOK(id uint64) json.RawMessage {
	h.t.Helper()
	m := h.recv()
	require.Equal(h.t, wire.TOK, m.T, "reply %+v (e=%s)", m, m.E)
	require.Equal(h.t, id, m.ID)
	return m.R
}

// recvErr receives an "err" reply to id and returns its payload.
func (h *harness) recvErr(id uint64) wire.ErrorPayload {
	h.t.Helper()
	m := h.recv()
	require.Equal(h.t, wire.TErr, m.T, "reply %+v (r=%s)", m, m.R)
	require.Equal(h.t, id, m.ID)
	var p wire.ErrorPayload
	require.NoError(h.t, json.Unmarshal(m.E, &p))
	return p
}

// wait closes stdin and returns serve's result, discarding replies not yet received. It
// may be called more than once.
func (h *harness) wait() error {
	h.t.Helper()
	if h.ended {
		return h.err
	}
	h.ended = true
	h.in.Close()
	timeout := time.After(10 * time.Second)
	lines := h.lines
	for done := false; !done; {
		select {
		case h.err = <-h.done:
			done = true
		case _, ok := <-lines:
			if !ok {
				lines = nil
			}
		case <-timeout:
			h.t.Error("serve did not return within 10s of EOF on stdin")
			h.outR.Close()
			timeout = nil
		}
	}
	if lines != nil {
		for range lines {
		}
	}
	return h.err
}
