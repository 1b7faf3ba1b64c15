package taskdtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/taskd-dev/taskd/internal/sandbox"
)

// modeEnv selects the worker mode when a test binary runs as a worker.
const modeEnv = "TASKD_TEST_WORKER"

// MaybeRunWorker turns the test binary into a worker process when it was started as one
// (see WorkerYAML), or into internal/sandbox's helper when a worker with a umask or
// rlimits was started from it (sandbox.Main). Main calls it; a TestMain that is not Main
// calls it first thing.
func MaybeRunWorker() {
	sandbox.Main()
	mode := os.Getenv(modeEnv)
	if mode == "" {
		return
	}
	os.Exit(runWorker(mode))
}

// WorkerYAML returns the config of an interface named name whose workers are this test
// binary in the given mode. extra is more YAML keys of the interface, one per line
// ("max_workers: 2").
//
// Modes: "raw" (a well-behaved worker, see below), "neverready", "exitnow" (writes to
// stderr and exits 1), "floodexit" (writes 1000 stderr lines, then why it fails, and
// exits 1), "slowready" (ready after 300ms), "readydie" (exits 20ms after ready),
// "readyexit" (exits right after ready).
//
// Methods of "raw": echo (returns its args), fail (err type TestError), pid, sleep [ms],
// record [ms] (appends its pid to the file named by $TASKD_TEST_RECORD, then sleeps),
// spin (burns CPU forever), crash (exits 3 mid-call), bye (sends bye, then the reply),
// byeafter (the reply, then bye: the late bye the protocol warns against), garbage (prints a stray line
// first), longline [n] (replies with an n-byte line), endless (replies with a line that
// never ends), badutf8 (replies with a result that is not UTF-8), badid (replies with a wrong id),
// recordcrash (record, crashing on the first run of all), dones (how many "done" it has received), env (its environment), wait (blocks until the
// call is cancelled), stderr [n] (writes an n-byte stderr line), stderrflood [n, size]
// (writes n numbered stderr lines of size bytes: "flood line 000001 xxx"), logs, alloc [n] (allocates
// and touches n MiB, kept until it exits), alloclater [n] (the same after its reply),
// childalloc [n] (starts a child process that holds n MiB until the worker exits), orphan
// (double-forks a grandchild that calls setsid and sleeps an hour: it left the worker's
// process group and session, and its parent has exited; returns its pid).
func WorkerYAML(name, mode, extra string, env ...string) string {
	var b strings.Builder
	// GORACE: a race-enabled binary otherwise sleeps 1s at exit, which would make every
	// worker exit look slow.
	fmt.Fprintf(&b, "  %s:\n    command: [%q]\n    env: {%s: %q, GORACE: \"atexit_sleep_ms=0\"", name, os.Args[0], modeEnv, mode)
	for i := 0; i+1 < len(env); i += 2 {
		fmt.Fprintf(&b, ", %s: %q", env[i], env[i+1])
	}
	b.WriteString("}\n")
	for _, line := range strings.Split(strings.TrimSpace(extra), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			fmt.Fprintf(&b, "    %s\n", line)
		}
	}
	return b.String()
}

type rawMsg struct {
	T  string            `json:"t"`
	ID uint64            `json:"id"`
	M  string            `json:"m"`
	A  []json.RawMessage `json:"a"`
}

func runWorker(mode string) int {
	out := bufio.NewWriter(os.Stdout)
	send := func(v any) {
		b, _ := json.Marshal(v)
		out.Write(b)
		out.WriteByte('\n')
		out.Flush()
	}
	switch mode {
	case "neverready":
		fmt.Fprintln(os.Stderr, "setting up forever")
		select {}
	case "exitnow":
		fmt.Fprintln(os.Stderr, "fatal: cannot open database /nonexistent/db.sqlite: no such file")
		return 1
	case "floodexit": // floods stderr, then says why it cannot start, and exits 1
		flood(1000, 100)
		fmt.Fprintln(os.Stderr, "fatal: the real reason, after the flood")
		return 1
	case "slowready":
		time.Sleep(300 * time.Millisecond)
	case "detach": // not a worker: the child of orphan; starts the grandchild, prints its pid, exits
		gc := exec.Command(os.Args[0])
		gc.Env = append(os.Environ(), modeEnv+"=sleeper")
		gc.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // leaves the worker's process group and session
		if err := gc.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(gc.Process.Pid)
		return 0
	case "sleeper": // not a worker: the grandchild of orphan, in a session of its own
		time.Sleep(time.Hour)
		return 0
	case "hog": // not a worker: the child of childalloc, holding memory until stdin closes
		var mib int
		fmt.Sscan(os.Getenv("TASKD_TEST_HOG_MIB"), &mib)
		b := make([]byte, mib<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		_, _ = io.Copy(io.Discard, os.Stdin)
		runtime.KeepAlive(b)
		return 0
	}
	if f := os.Getenv("TASKD_TEST_SETUP_LOG"); f != "" {
		fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintf(fh, "%d\n", os.Getpid())
			fh.Close()
		}
	}
	send(map[string]any{"t": "ready", "v": 1})
	switch mode {
	case "readydie":
		time.Sleep(20 * time.Millisecond)
		return 0
	case "readyexit":
		return 0
	}
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	dones := 0
	var hoard [][]byte // what alloc allocated
	next := func() (rawMsg, bool) {
		line, err := in.ReadBytes('\n')
		if err != nil {
			return rawMsg{}, false
		}
		var m rawMsg
		_ = json.Unmarshal(line, &m)
		return m, true
	}
	ok := func(id uint64, r any) { send(map[string]any{"t": "ok", "id": id, "r": r}) }
	for {
		m, more := next()
		if !more {
			return 0
		}
		switch m.T {
		case "done":
			dones++
			continue
		case "call":
		default:
			continue
		}
		num := func(i int) int {
			var n int
			if i < len(m.A) {
				_ = json.Unmarshal(m.A[i], &n)
			}
			return n
		}
		switch m.M {
		case "echo", "":
			if m.A == nil {
				m.A = []json.RawMessage{}
			}
			ok(m.ID, m.A)
		case "fail":
			send(map[string]any{"t": "err", "id": m.ID, "e": map[string]any{
				"msg": "it failed as asked", "type": "TestError", "trace": "at raw.go:1\nat raw.go:2"}})
		case "pid":
			ok(m.ID, os.Getpid())
		case "sleep":
			time.Sleep(time.Duration(num(0)) * time.Millisecond)
			ok(m.ID, true)
		case "record": // a call with an effect: appends its pid to $TASKD_TEST_RECORD, then sleeps [ms]
			if fh, err := os.OpenFile(os.Getenv("TASKD_TEST_RECORD"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				fmt.Fprintf(fh, "%d\n", os.Getpid())
				fh.Close()
			}
			time.Sleep(time.Duration(num(0)) * time.Millisecond)
			ok(m.ID, true)
		case "recordcrash": // like record, but the first run of all (the record was empty) crashes before answering
			b, _ := os.ReadFile(os.Getenv("TASKD_TEST_RECORD"))
			if fh, err := os.OpenFile(os.Getenv("TASKD_TEST_RECORD"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				fmt.Fprintf(fh, "%d\n", os.Getpid())
				fh.Close()
			}
			if len(b) == 0 {
				return 3
			}
			ok(m.ID, true)
		case "spin":
			for {
			}
		case "crash":
			fmt.Fprintln(os.Stderr, "about to crash on purpose")
			return 3
		case "bye":
			send(map[string]any{"t": "bye", "msg": "asked to"})
			ok(m.ID, true)
		case "byeafter": // the late bye the protocol warns against: the reply first, then bye
			ok(m.ID, true)
			send(map[string]any{"t": "bye", "msg": "asked to"})
		case "garbage":
			fmt.Fprintln(out, "this line is not JSON")
			fmt.Fprintln(out, `["an array is not an object either"]`)
			ok(m.ID, "after garbage")
		case "longline":
			out.WriteString(`{"t":"ok","id":`)
			fmt.Fprint(out, m.ID)
			out.WriteString(`,"r":"`)
			out.WriteString(strings.Repeat("x", num(0)))
			out.WriteString("\"}\n")
			out.Flush()
		case "endless": // a reply line that never ends: taskd must refuse it at max_message_bytes
			out.WriteString(`{"t":"ok","id":`)
			fmt.Fprint(out, m.ID)
			out.WriteString(`,"r":"`)
			chunk := strings.Repeat("x", 64<<10)
			for {
				if _, err := out.WriteString(chunk); err != nil {
					return 0 // taskd closed the pipe (it kills this worker anyway)
				}
			}
		case "badutf8": // a reply whose result is not valid UTF-8
			out.WriteString(`{"t":"ok","id":`)
			fmt.Fprint(out, m.ID)
			out.WriteString(",\"r\":\"caf\xe9\"}\n")
			out.Flush()
		case "badid":
			ok(m.ID+1000, "wrong id")
		case "dones":
			ok(m.ID, dones)
		case "env":
			ok(m.ID, os.Environ())
		case "wait":
			for {
				c, more := next()
				if !more {
					return 0
				}
				if c.T == "cancel" && c.ID == m.ID {
					ok(m.ID, "cancelled")
					break
				}
			}
		case "alloc", "alloclater": // allocates and touches n MiB, kept until the worker exits
			if m.M == "alloclater" { // after the reply
				ok(m.ID, true)
			}
			b := make([]byte, num(0)<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			hoard = append(hoard, b)
			if m.M == "alloc" {
				ok(m.ID, true)
			}
		case "orphan": // double fork: a child starts a grandchild that calls setsid, and exits; returns the grandchild's pid
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), modeEnv+"=detach")
			cmd.Stderr = os.Stderr
			outb, err := cmd.Output()
			var pid int
			if _, serr := fmt.Sscan(string(outb), &pid); err != nil || serr != nil {
				send(map[string]any{"t": "err", "id": m.ID, "e": map[string]any{"msg": fmt.Sprintf("orphan: %v %v", err, serr)}})
				continue
			}
			ok(m.ID, pid)
		case "childalloc": // starts a child (in this worker's process group) that holds n MiB
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), modeEnv+"=hog", fmt.Sprintf("TASKD_TEST_HOG_MIB=%d", num(0)))
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			// The child exits when its stdin closes: when this worker exits (or its process
			// group is killed).
			if _, err := cmd.StdinPipe(); err != nil {
				send(map[string]any{"t": "err", "id": m.ID, "e": map[string]any{"msg": err.Error()}})
				continue
			}
			if err := cmd.Start(); err != nil {
				send(map[string]any{"t": "err", "id": m.ID, "e": map[string]any{"msg": err.Error()}})
				continue
			}
			ok(m.ID, cmd.Process.Pid)
		case "stderr":
			fmt.Fprintln(os.Stderr, strings.Repeat("e", num(0)))
			ok(m.ID, true)
		case "stderrflood": // writes n stderr lines of size bytes, numbered
			flood(num(0), num(1))
			ok(m.ID, true)
		case "logs":
			send(map[string]any{"t": "ok", "id": m.ID, "r": true, "logs": []map[string]any{
				{"ts": 1700000000.5, "lvl": "info", "msg": "first", "f": map[string]any{"k": 1}},
				{"ts": 1700000001.5, "lvl": "warn", "msg": "second"},
			}})
		default:
			send(map[string]any{"t": "err", "id": m.ID, "e": map[string]any{"msg": "no method " + m.M, "type": "NoSuchMethod"}})
		}
	}
}

// flood writes n lines of size bytes (at least their number) to stderr, as fast as it
// can: "flood line 000001 xxxx...".
func flood(n, size int) {
	w := bufio.NewWriterSize(os.Stderr, 64<<10)
	for i := 1; i <= n; i++ {
		head := fmt.Sprintf("flood line %06d ", i)
		w.WriteString(head)
		w.WriteString(strings.Repeat("x", max(0, size-len(head))))
		w.WriteByte('\n')
	}
	w.Flush()
}
