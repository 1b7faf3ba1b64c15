package worker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taskd-dev/taskd/internal/floorworker"
	"github.com/taskd-dev/taskd/internal/wire"
)

// benchHelperMain runs the workers BenchmarkPipe drives: "bench-sdk" is this SDK's echo
// worker (Run), "bench-floor" the minimal single-goroutine worker (internal/floorworker).
func benchHelperMain(mode string) (int, bool) {
	var err error
	switch mode {
	case "bench-sdk":
		if path := os.Getenv("TASKD_BENCH_CPUPROFILE"); path != "" { // where the SDK's time goes
			f, perr := os.Create(path)
			if perr == nil && pprof.StartCPUProfile(f) == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
		err = Run(Spec{Methods: map[string]Func{"echo": func(_ context.Context, c *Call) (any, error) { return c.RawArgs(), nil }}})
	case "bench-floor":
		err = floorworker.Serve(os.Stdin, os.Stdout)
	case "bench-floor-netpoll":
		// The floor reading through Go's netpoller instead of a blocking read.
		if err = unix.SetNonblock(0, true); err == nil {
			err = floorworker.Serve(os.NewFile(0, "stdin"), os.Stdout)
		}
	default:
		return 0, false
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1, true
	}
	return 0, true
}

// pythonBench is the script with the Python SDK's echo worker and its floor.
const pythonBench = "../../sdk/python/tests/bench_worker.py"

// BenchmarkPipe drives a worker process directly over its stdin and stdout, as taskd
// would, with no taskd: this SDK's echo worker against the minimal single-goroutine
// worker (the floor) in the same run, one call in flight at a time and eight pipelined.
// Besides ns/op (per call) it reports the worker's CPU per call and its context switches
// per call, read from /proc. With TASKD_BENCH_STRACE=dir the worker runs under
// "strace -f -c" and the syscall summary of each run is written to dir. With
// TASKD_BENCH_PYTHON=python3 it also drives the Python SDK's echo worker and a minimal
// single-threaded Python worker (sdk/python/tests/bench_worker.py). With
// TASKD_BENCH_CPUPROFILE=file the SDK worker writes its CPU profile there.
//
//	go test -run '^$' -bench Pipe -benchtime 20000x ./pkg/worker
func BenchmarkPipe(b *testing.B) {
	for _, depth := range []int{1, 8} {
		for _, w := range []string{"floor", "floor-netpoll", "sdk"} {
			b.Run(fmt.Sprintf("%s/inflight=%d", w, depth), func(b *testing.B) { benchPipe(b, "bench-"+w, depth) })
		}
		if py := os.Getenv("TASKD_BENCH_PYTHON"); py != "" {
			for _, w := range []string{"floor", "sdk"} {
				b.Run(fmt.Sprintf("py-%s/inflight=%d", w, depth), func(b *testing.B) { benchPipe(b, py+" "+pythonBench+" "+w, depth) })
			}
		}
	}
}

func benchPipe(b *testing.B, mode string, depth int) {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	args := []string{self, "-test.run=^$"}
	if strings.Contains(mode, " ") { // an interpreter and a script
		args = strings.Fields(mode)
	}
	if dir := os.Getenv("TASKD_BENCH_STRACE"); dir != "" {
		out := filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+"-"+strconv.Itoa(b.N)+".txt")
		args = append([]string{"strace", "-f", "-c", "-o", out}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "WORKER_TEST_HELPER="+mode)
	cmd.Stderr = os.Stderr
	inR, inW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout = inR, outW
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	inR.Close()
	outW.Close()
	defer func() {
		inW.Close()
		_ = cmd.Wait()
		outR.Close()
	}()
	lr := wire.NewLineReader(outR, 0)
	if line, err := lr.ReadLine(); err != nil || !bytes.HasPrefix(line, []byte(`{"t":"ready"`)) {
		b.Fatalf("no ready line: %q %v", line, err)
	}
	time.Sleep(20 * time.Millisecond) // under strace, let it settle
	pid := cmd.Process.Pid
	if os.Getenv("TASKD_BENCH_STRACE") != "" {
		pid = 0 // strace is the child: /proc figures would be strace's
	}
	payload := []byte(`["` + strings.Repeat("x", 60) + `"]`) // a 64-byte echo
	var call []byte
	send := func(id uint64) {
		call = wire.AppendCall(call[:0], 0, id, 0, "echo", payload)
		if _, err := inW.Write(call); err != nil {
			b.Fatal(err)
		}
	}
	recv := func() {
		line, err := lr.ReadLine()
		if err != nil || !bytes.HasPrefix(line, []byte(`{"t":"ok"`)) {
			b.Fatalf("reply %q, %v", line, err)
		}
	}
	cpu0, cs0 := procUsage(pid)
	b.ResetTimer()
	start := time.Now()
	var sent, got uint64
	n := uint64(b.N)
	for got < n {
		for sent < n && sent-got < uint64(depth) {
			sent++
			send(sent)
		}
		recv()
		got++
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cpu1, cs1 := procUsage(pid)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
	if pid != 0 {
		b.ReportMetric(float64(cpu1-cpu0)/1e3/float64(b.N), "worker-cpu-µs/call")
		b.ReportMetric(float64(cs1-cs0)/float64(b.N), "worker-ctxsw/call")
	}
}

// procUsage returns the CPU time (ns, from schedstat) and context switches of all threads
// of process pid; zeros if pid is 0 or /proc cannot tell.
func procUsage(pid int) (cpu, ctxsw int64) {
	if pid == 0 {
		return 0, 0
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, t := range tasks {
		if s, err := os.ReadFile(filepath.Join(t, "schedstat")); err == nil {
			if f := strings.Fields(string(s)); len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				cpu += v
			}
		}
		if s, err := os.ReadFile(filepath.Join(t, "status")); err == nil {
			for _, line := range strings.Split(string(s), "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					ctxsw += n
				}
			}
		}
	}
	return cpu, ctxsw
}

// BenchmarkServeCPU is the user-space cost of a call without any system call: n pipelined
// echo calls read from memory and answered into io.Discard, by this SDK and by the floor
// worker. BenchmarkPipe adds the pipe's system calls and wake-ups to both.
func BenchmarkServeCPU(b *testing.B) {
	payload := []byte(`["` + strings.Repeat("x", 60) + `"]`)
	var input []byte
	for id := uint64(1); id <= 1000; id++ {
		input = wire.AppendCall(input, 0, id, 0, "echo", payload)
	}
	spec := Spec{Methods: map[string]Func{"echo": func(_ context.Context, c *Call) (any, error) { return c.RawArgs(), nil }}}
	for _, w := range []string{"floor", "sdk"} {
		b.Run(w, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if w == "floor" {
					err = floorworker.Serve(bytes.NewReader(input), io.Discard)
				} else {
					err = serve(context.Background(), spec, bytes.NewReader(input), io.Discard, io.Discard, 0)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000/1000, "µs/call")
		})
	}
}
