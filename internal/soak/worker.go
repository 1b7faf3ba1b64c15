package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/taskd-dev/taskd/pkg/worker"
)

// WorkerEnv names the environment variable that turns a soak binary into a worker: "go"
// (the Go SDK), "flood" (the Go SDK, flooding its stderr) or "raw" (worker protocol v1
// spoken directly, no SDK). See MaybeRunWorker.
const WorkerEnv = "TASKD_SOAK_WORKER"

// recordEnv names the file that the record method appends to.
const recordEnv = "SOAK_RECORD"

// MaybeRunWorker runs this process as a soak worker and exits if WorkerEnv is set; it
// returns at once otherwise. Call it first thing in main (or TestMain).
//
// Every soak worker, in Go, Python (worker.py beside this file) or raw, has the same
// methods, each taking a nonce (a string unique to the call) first and answering it:
//
//	echo(nonce)        -> nonce
//	who(nonce)         -> [nonce, pid]
//	record(nonce)      -> nonce, after appending the nonce and a newline to $SOAK_RECORD:
//	                      the effect that shows whether a call ran twice
//	leak(nonce, mib)   -> nonce, keeping mib MiB allocated and touched until it exits
//	flood(nonce, kib)  -> nonce, after writing kib KiB of lines to stderr
func MaybeRunWorker() {
	mode := os.Getenv(WorkerEnv)
	if mode == "" {
		return
	}
	var err error
	switch mode {
	case "go", "flood":
		if mode == "flood" {
			go floodStderr()
		}
		err = worker.Run(goSpec())
	case "raw":
		err = runRaw()
	default:
		err = fmt.Errorf("unknown %s %q (want go, flood or raw)", WorkerEnv, mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak worker: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// methods implements the method contract once, for the Go SDK worker and the raw one:
// args are the call's JSON arguments, hoard keeps what leak allocated.
type methods struct {
	hoard [][]byte
}

func (w *methods) call(method string, args []json.RawMessage) (any, error) {
	var nonce string
	if len(args) == 0 || json.Unmarshal(args[0], &nonce) != nil {
		return nil, fmt.Errorf("%s: the first argument must be a nonce string", method)
	}
	num := func() int {
		var n int
		if len(args) > 1 {
			_ = json.Unmarshal(args[1], &n)
		}
		return n
	}
	switch method {
	case "echo":
		return nonce, nil
	case "who":
		return []any{nonce, os.Getpid()}, nil
	case "record":
		f, err := os.OpenFile(os.Getenv(recordEnv), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, err
		}
		_, err = f.WriteString(nonce + "\n") // one write: O_APPEND keeps records whole
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		return nonce, nil
	case "leak":
		b := make([]byte, num()<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		w.hoard = append(w.hoard, b)
		return nonce, nil
	case "flood":
		writeFlood(num(), true)
		return nonce, nil
	}
	return nil, fmt.Errorf("no method %q", method)
}

// goSpec is the Go SDK worker.
func goSpec() worker.Spec {
	w := &methods{}
	m := map[string]worker.Func{}
	for _, name := range []string{"echo", "who", "record", "leak", "flood"} {
		m[name] = func(_ context.Context, c *worker.Call) (any, error) {
			var args []json.RawMessage
			if err := json.Unmarshal(c.RawArgs(), &args); err != nil {
				return nil, err
			}
			r, err := w.call(name, args)
			if err != nil {
				return nil, worker.Errorf("SoakError", "%v", err)
			}
			return r, nil
		}
	}
	return worker.Spec{Methods: m}
}

// floodStderr writes 2 KiB of stderr lines every 10ms (200 KiB/s, which taskd logs line
// by line), and a line longer than taskd's stderr chunk every second: a worker whose
// stderr taskd must keep draining.
func floodStderr() {
	for i := 1; ; i++ {
		writeFlood(2, i%100 == 0)
		time.Sleep(10 * time.Millisecond)
	}
}

// writeFlood writes kib KiB of stderr in lines of 1 KiB, and if long one line of 8 KiB,
// twice as long as taskd's stderr chunk, which taskd splits.
func writeFlood(kib int, long bool) {
	line := strings.Repeat("f", 1023) + "\n"
	bw := bufio.NewWriterSize(os.Stderr, 64<<10)
	for range kib {
		bw.WriteString(line)
	}
	if long {
		bw.WriteString(strings.Repeat("L", 8<<10) + "\n")
	}
	_ = bw.Flush()
}

// rawMsg is a worker protocol v1 message, as the raw worker reads and writes it.
type rawMsg struct {
	T  string            `json:"t"`
	V  int               `json:"v,omitempty"`
	ID uint64            `json:"id,omitempty"`
	M  string            `json:"m,omitempty"`
	A  []json.RawMessage `json:"a,omitempty"`
	R  any               `json:"r,omitempty"`
	E  map[string]string `json:"e,omitempty"`
}

// runRaw is the raw worker: worker protocol v1 over stdin and stdout with nothing but
// encoding/json, one call at a time, until EOF on stdin.
func runRaw() error {
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out) // Encode ends each object with "\n"
	send := func(m rawMsg) error {
		if err := enc.Encode(m); err != nil {
			return err
		}
		return out.Flush()
	}
	if err := send(rawMsg{T: "ready", V: 1}); err != nil {
		return err
	}
	w := &methods{}
	in := bufio.NewReaderSize(os.Stdin, 64<<10)
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			return nil // EOF: exit now
		}
		var m rawMsg
		if json.Unmarshal(line, &m) != nil || m.T != "call" {
			continue // done, cancel, unknown: no reply
		}
		r, cerr := w.call(m.M, m.A)
		reply := rawMsg{T: "ok", ID: m.ID, R: r}
		if cerr != nil {
			reply = rawMsg{T: "err", ID: m.ID, E: map[string]string{"msg": cerr.Error(), "type": "SoakError"}}
		} else if r == nil {
			reply.R = json.RawMessage("null")
		}
		if err := send(reply); err != nil {
			return err
		}
	}
}
