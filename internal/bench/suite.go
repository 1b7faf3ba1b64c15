package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/taskd-dev/taskd/internal/taskdproc"
	"github.com/taskd-dev/taskd/pkg/client"
)

// Suite configures RunSuite, the side-by-side benchmark behind `make bench`. Zero values
// mean the defaults noted.
type Suite struct {
	TaskdBin string        // the taskd binary (required)
	EchoBin  string        // the Go SDK echo worker, examples/echo (required)
	LeaseBin string        // the minimal lease worker, internal/taskdtest/leaseworker; "" skips the direct-lease table (lease.go)
	floor    []*pipeWorker // the minimal workers (LeaseBin), while measureCalls runs (floor.go)
	// Conns is the client.Config.Conns of the Client that rows (b)–(e) share; 0: its
	// default.
	Conns int

	Duration time.Duration // length of one measured run; default 2s
	Runs     int           // runs per cell, of which the median is reported; default 3
	Warmup   time.Duration // unmeasured load before each run; default 100ms; negative = none
	Callers  []int         // caller counts; default 1, 8, 32
	Pipeline int           // calls per pipelined batch in scenario (d); default 32

	// RSSWorkers is the number of idle workers for the memory measurement; default 100,
	// negative skips it. Starts is the number of daemon starts for the first-checkout
	// measurement; default 3, negative skips it.
	RSSWorkers int
	Starts     int

	Out io.Writer // the Markdown report
	Log io.Writer // progress lines; nil for none
}

// Payloads of the echo calls.
var (
	smallPayload = strings.Repeat("taskd-bench", 5)[:50]
	largePayload = strings.Repeat("0123456789abcdef", 256) // 4 KiB
)

type kind int

const (
	kindPipe kind = iota
	kindHeld
	kindOneShot
	kindPipelined
	kindMinimal // the direct pipe to the minimal worker (floor.go)
)

type scenario struct {
	label   string
	kind    kind
	payload string
	base    int  // index of the direct-pipe scenario with the same payload
	relay   bool // on a Client with Direct: DirectOff (no direct or warm leases)
}

// scenarios are the rows of the table, in order.
var scenarios = []scenario{
	{"(a) direct pipe, no taskd", kindPipe, smallPayload, 0, false},
	{"(b) taskd, held checkout (direct lease)", kindHeld, smallPayload, 0, false},
	{"(c) taskd, one-shot Client.Call (warm lease)", kindOneShot, smallPayload, 0, false},
	{"(d) taskd, pipelined Go on one checkout", kindPipelined, smallPayload, 0, false},
	{"(e) direct pipe, 4 KiB", kindPipe, largePayload, 4, false},
	{"(e) taskd, held checkout, 4 KiB", kindHeld, largePayload, 4, false},
	{"(f) direct pipe, minimal single-goroutine worker (floor)", kindMinimal, smallPayload, 6, false},
	{"(h) taskd, held checkout, relayed (DirectOff)", kindHeld, smallPayload, 0, true},
	{"(h) taskd, one-shot Client.Call, relayed (DirectOff)", kindOneShot, smallPayload, 0, true},
}

// run is one measured run of one cell.
type run struct {
	callsPerSec float64
	p50, p99    time.Duration
	taskdCPU    float64 // µs per call; -1 for the direct pipe (no taskd)
	allCPU      float64 // µs per call
	clientCPU   float64 // µs per call of this process (the callers and client.Client); -1 for a direct pipe
}

// cell is the median of its runs, metric by metric.
type cell struct {
	run
	ratio float64 // calls/s over the direct pipe's at the same caller count and payload
}

func (s *Suite) defaults() {
	if s.Duration <= 0 {
		s.Duration = 2 * time.Second
	}
	if s.Runs <= 0 {
		s.Runs = 3
	}
	if s.Warmup == 0 {
		s.Warmup = 100 * time.Millisecond
	}
	if len(s.Callers) == 0 {
		s.Callers = []int{1, 8, 32}
	}
	if s.Pipeline <= 0 {
		s.Pipeline = 32
	}
	if s.RSSWorkers == 0 {
		s.RSSWorkers = 100
	}
	if s.Starts == 0 {
		s.Starts = 3
	}
	if s.Log == nil {
		s.Log = io.Discard
	}
}

// RunSuite runs the whole benchmark and writes the Markdown report to s.Out. It starts
// its own taskd daemons (on temporary unix sockets) and echo workers, and stops them all
// before it returns.
func RunSuite(ctx context.Context, s Suite) error {
	s.defaults()
	for _, c := range s.Callers {
		if c < 1 {
			return fmt.Errorf("bench: %d callers: want at least 1", c)
		}
	}
	for _, p := range []*string{&s.TaskdBin, &s.EchoBin} {
		abs, err := filepath.Abs(*p) // taskd runs in a temporary directory
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			return fmt.Errorf("bench: %w (run make build first)", err)
		}
		*p = abs
	}
	if err := s.findFloor(); err != nil { // floor.go
		return err
	}
	hz := clockTicks()
	began := time.Now()

	var startup *startupResult
	if s.Starts > 0 {
		r, err := s.measureStartup(ctx)
		if err != nil {
			return err
		}
		startup = &r
	}
	var mem *memResult
	if s.RSSWorkers > 0 {
		r, err := s.measureMemory(ctx)
		if err != nil {
			return err
		}
		mem = &r
	}
	cells, version, afterRSS, err := s.measureCalls(ctx, hz)
	if err != nil {
		return err
	}
	var leaseCells map[[2]int]cell
	if ok, err := s.leaseBinOK(); err != nil {
		return err
	} else if ok {
		if leaseCells, err = s.measureLease(ctx, hz); err != nil {
			return err
		}
	}
	s.report(version, cells, startup, mem, afterRSS, time.Since(began))
	if leaseCells != nil {
		s.reportLease(leaseCells)
	}
	return nil
}

// callWorkers is the size of the daemon's echo pool for the call measurements: a worker
// per caller of the largest caller count, and at least 8.
func (s *Suite) callWorkers() int { return max(slices.Max(s.Callers), 8) }

// measureCalls runs every scenario at every caller count, s.Runs times (the runs
// interleaved, so that drift in the machine's speed hits every scenario alike).
func (s *Suite) measureCalls(ctx context.Context, hz int64) (cells map[[2]int]cell, version string, afterRSS int64, err error) {
	maxCallers := slices.Max(s.Callers)
	workers := s.callWorkers()
	d, _, err := startDaemon(ctx, s.TaskdBin, s.EchoBin, workers, workers)
	if err != nil {
		return nil, "", 0, err
	}
	defer func() { err = errors.Join(err, stopDaemon(d)) }()
	if _, err := waitIdle(ctx, d, workers, time.Minute); err != nil {
		return nil, "", 0, err
	}
	var pipes []*pipeWorker
	defer func() {
		for _, p := range pipes {
			_ = p.Close()
		}
	}()
	for range maxCallers {
		p, err := startPipeWorker(s.EchoBin, 10*time.Second)
		if err != nil {
			return nil, "", 0, err
		}
		pipes = append(pipes, p)
	}
	defer s.stopFloor()
	if err := s.startFloor(maxCallers); err != nil {
		return nil, "", 0, err
	}
	c, err := client.New(client.Config{Addr: d.Addr, Interface: "echo", Conns: s.Conns})
	if err != nil {
		return nil, "", 0, err
	}
	defer c.Close()
	relayed, err := client.New(client.Config{Addr: d.Addr, Interface: "echo", Conns: s.Conns, Direct: client.DirectOff})
	if err != nil {
		return nil, "", 0, err
	}
	defer relayed.Close()
	pong, err := c.Ping(ctx)
	if err != nil {
		return nil, "", 0, err
	}
	version = pong.Version

	runs := map[[2]int][]run{}
	total := s.Runs * s.numScenarios() * len(s.Callers)
	k := 0
	for r := range s.Runs {
		for si, sc := range scenarios {
			if s.skip(sc) {
				continue
			}
			for _, n := range s.Callers {
				if err := ctx.Err(); err != nil {
					return nil, "", 0, err
				}
				k++
				cl := c
				if sc.relay {
					cl = relayed
				}
				one, err := s.measure(ctx, hz, sc, n, d, pipes, cl)
				if err != nil {
					return nil, "", 0, fmt.Errorf("%s, %d callers: %w", sc.label, n, err)
				}
				fmt.Fprintf(s.Log, "[%d/%d] run %d: %s, %d callers: %s calls/s\n", k, total, r+1, sc.label, n, fmtInt(one.callsPerSec))
				key := [2]int{si, n}
				runs[key] = append(runs[key], one)
			}
		}
	}
	afterRSS, _ = procRSS(d.PID())

	cells = map[[2]int]cell{}
	for key, rs := range runs {
		cells[key] = cell{run: median(rs)}
	}
	for key, cl := range cells {
		base := cells[[2]int{scenarios[key[0]].base, key[1]}]
		if base.callsPerSec > 0 {
			cl.ratio = cl.callsPerSec / base.callsPerSec
		}
		cells[key] = cl
	}
	return cells, version, afterRSS, nil
}

// measure runs one cell once: a warm-up, then a measured run with CPU sampled around it.
func (s *Suite) measure(ctx context.Context, hz int64, sc scenario, n int, d *taskdproc.Daemon, pipes []*pipeWorker, c *client.Client) (run, error) {
	argsRaw, _ := json.Marshal([]string{sc.payload})
	args := []any{sc.payload}
	var setup Setup
	batch := 1
	pipes = s.pipesFor(sc, pipes)
	switch sc.kind {
	case kindPipe, kindMinimal:
		setup = func(_ context.Context, i int) (Op, func(), error) {
			w := pipes[i]
			return func(_ context.Context, _ int, rec *Histogram) (int, error) {
				start := time.Now()
				if err := w.Call("echo", argsRaw); err != nil {
					return 0, err
				}
				rec.Record(time.Since(start))
				return 1, nil
			}, nil, nil
		}
	case kindHeld:
		setup = HeldCheckouts(c, "echo", args)
	case kindOneShot:
		setup = OneShot(c, "echo", args)
	case kindPipelined:
		setup = HeldCheckouts(c, "echo", args)
		batch = s.Pipeline
	}
	if s.Warmup > 0 {
		if _, err := Drive(ctx, Plan{Callers: n, Duration: s.Warmup, Batch: batch}, setup); err != nil {
			return run{}, err
		}
	}

	taskdCPU := &cpuMeter{hz: hz}
	allCPU := &cpuMeter{hz: hz}
	clientCPU := &cpuMeter{hz: hz}
	plan := Plan{Callers: n, Duration: s.Duration, Batch: batch,
		OnStart: func() {
			all := []int{os.Getpid()}
			if sc.kind.direct() {
				for _, p := range pipes[:n] {
					all = append(all, p.PID())
				}
			} else {
				all = append(all, d.PID())
				all = append(all, d.Workers()...)
				taskdCPU.Start([]int{d.PID()})
				clientCPU.Start([]int{os.Getpid()})
			}
			allCPU.Start(all)
		},
		OnStop: func() {
			taskdCPU.Stop()
			allCPU.Stop()
			clientCPU.Stop()
		},
	}
	res, err := Drive(ctx, plan, setup)
	if err != nil {
		return run{}, err
	}
	if res.Calls == 0 {
		return run{}, errors.New("no call completed")
	}
	perCall := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(res.Calls) }
	one := run{callsPerSec: res.CallsPerSec(), p50: res.Latency.Quantile(0.5), p99: res.Latency.Quantile(0.99),
		taskdCPU: -1, allCPU: perCall(allCPU.delta), clientCPU: -1}
	if !sc.kind.direct() {
		one.taskdCPU = perCall(taskdCPU.delta)
		one.clientCPU = perCall(clientCPU.delta)
	}
	return one, nil
}

// median returns, metric by metric, the median of rs (the mean of the middle two for an
// even count).
func median(rs []run) run {
	pick := func(f func(run) float64) float64 { return medianOf(rs, f) }
	return run{
		callsPerSec: pick(func(r run) float64 { return r.callsPerSec }),
		p50:         time.Duration(pick(func(r run) float64 { return float64(r.p50) })),
		p99:         time.Duration(pick(func(r run) float64 { return float64(r.p99) })),
		taskdCPU:    pick(func(r run) float64 { return r.taskdCPU }),
		allCPU:      pick(func(r run) float64 { return r.allCPU }),
		clientCPU:   pick(func(r run) float64 { return r.clientCPU }),
	}
}

// medianOf is the median of f over xs (the mean of the middle two for an even count).
func medianOf[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	m := len(v) / 2
	if len(v)%2 == 0 {
		return (v[m-1] + v[m]) / 2
	}
	return v[m]
}

// startupResult is the median over several daemon starts with min_idle 1.
type startupResult struct {
	ready, idle   time.Duration // from process start: until Ping answers, until the worker is idle
	first, second time.Duration // first Checkout+Release on a new Client; a second one on it
	rss           int64         // taskd's RSS with its one idle worker
}

// measureStartup starts a daemon with min_idle 1 s.Starts times and measures, on each, the
// first checkout of a new Client once the worker is idle.
func (s *Suite) measureStartup(ctx context.Context) (startupResult, error) {
	var rs []startupResult
	for i := range s.Starts {
		fmt.Fprintf(s.Log, "first checkout: daemon start %d/%d\n", i+1, s.Starts)
		r, err := s.startOnce(ctx)
		if err != nil {
			return startupResult{}, err
		}
		rs = append(rs, r)
	}
	med := func(f func(startupResult) time.Duration) time.Duration {
		return time.Duration(medianOf(rs, func(r startupResult) float64 { return float64(f(r)) }))
	}
	out := startupResult{
		ready:  med(func(r startupResult) time.Duration { return r.ready }),
		idle:   med(func(r startupResult) time.Duration { return r.idle }),
		first:  med(func(r startupResult) time.Duration { return r.first }),
		second: med(func(r startupResult) time.Duration { return r.second }),
		rss:    int64(med(func(r startupResult) time.Duration { return time.Duration(r.rss) })),
	}
	return out, nil
}

func (s *Suite) startOnce(ctx context.Context) (r startupResult, err error) {
	d, ready, err := startDaemon(ctx, s.TaskdBin, s.EchoBin, 1, 1)
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, stopDaemon(d)) }()
	r.ready = ready
	if r.idle, err = waitIdle(ctx, d, 1, 30*time.Second); err != nil {
		return r, err
	}
	r.rss, _ = procRSS(d.PID())
	c, err := client.New(client.Config{Addr: d.Addr, Interface: "echo"})
	if err != nil {
		return r, err
	}
	defer c.Close()
	for i, dst := range []*time.Duration{&r.first, &r.second} {
		start := time.Now()
		co, err := c.Checkout(ctx)
		if err != nil {
			return r, fmt.Errorf("bench: checkout %d after start: %w", i+1, err)
		}
		co.Release()
		*dst = time.Since(start)
	}
	return r, nil
}

// memResult is taskd's memory with RSSWorkers idle workers.
type memResult struct {
	workers int
	rss     int64
	spawn   time.Duration // from process start until all workers were idle
}

// limit is the RSS target for that many idle workers: 30 MiB + 64 KiB per worker.
func (m *memResult) limit() int64 { return 30<<20 + int64(m.workers)*64<<10 }

func (s *Suite) measureMemory(ctx context.Context) (memResult, error) {
	n := s.RSSWorkers
	fmt.Fprintf(s.Log, "memory: starting taskd with %d idle workers\n", n)
	d, _, err := startDaemon(ctx, s.TaskdBin, s.EchoBin, n, n)
	if err != nil {
		return memResult{}, err
	}
	idle, err := waitIdle(ctx, d, n, 2*time.Minute)
	var rss int64
	if err == nil {
		rss, err = procRSS(d.PID())
	}
	err = errors.Join(err, stopDaemon(d))
	return memResult{workers: n, rss: rss, spawn: idle}, err
}
