package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskd-dev/taskd/internal/bench"
	"github.com/taskd-dev/taskd/pkg/client"
)

// Bounds of one bench run, so that a typo cannot start a benchmark that runs for hours.
const (
	maxBenchCalls       = 10_000_000
	maxBenchDuration    = 10 * time.Minute
	maxBenchConcurrency = 10_000
	maxBenchPipeline    = 10_000
)

// benchFlags are the flags of taskctl bench.
type benchFlags struct {
	concurrency int
	calls       int64
	duration    time.Duration
	oneshot     bool
	pipeline    int
	setCalls    bool // -n was given
	setDuration bool // -d was given
}

// check validates the flags; its error is a usage error.
func (f *benchFlags) check() error {
	switch {
	case f.concurrency < 1 || f.concurrency > maxBenchConcurrency:
		return fmt.Errorf("-c %d: want 1 to %d concurrent callers", f.concurrency, maxBenchConcurrency)
	case f.setCalls && f.setDuration:
		return errors.New("-n and -d: give a number of calls or a duration, not both")
	case f.setCalls && (f.calls < 1 || f.calls > maxBenchCalls):
		return fmt.Errorf("-n %d: want 1 to %d calls (use -d for a longer run)", f.calls, maxBenchCalls)
	case !f.setCalls && (f.duration <= 0 || f.duration > maxBenchDuration):
		return fmt.Errorf("-d %v: want a positive duration up to %v", f.duration, maxBenchDuration)
	case f.pipeline < 0 || f.pipeline > maxBenchPipeline:
		return fmt.Errorf("--pipeline %d: want 0 to %d calls per batch", f.pipeline, maxBenchPipeline)
	case f.oneshot && f.pipeline > 1:
		return errors.New("--oneshot and --pipeline: a one-shot call cannot be pipelined; drop one of them")
	}
	return nil
}

// mode names the kind of calls made, for the report.
func (f *benchFlags) mode() string {
	switch {
	case f.oneshot:
		return "oneshot"
	case f.pipeline > 1:
		return "pipeline"
	}
	return "held"
}

func newBenchCmd(opts *options) *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench IFACE METHOD [ARG...]",
		Short: "Measure the throughput and latency of calls to a worker method",
		Long: `bench calls METHOD of interface IFACE with the given arguments (parsed as for call)
from -c concurrent callers, for -d (default 5s) or until -n calls are done, then prints
the throughput and the latency percentiles of the calls. While it runs it prints
progress to stderr once a second if stderr is a terminal.

By default each caller checks out one worker for the whole run and calls it in a loop
(one call in flight per caller): -c must not exceed the interface's max_workers.
--oneshot makes each call a one-shot call instead (checkout, call, release), and
--pipeline N sends N calls at once on the caller's checkout and waits for the batch.
Calls that fail stop the run. Ctrl-C stops it early and prints what was measured.

--timeout bounds each checkout and each call, not the run.`,
		Example: `  taskctl bench echo echo hello
  taskctl bench -c 8 -d 10s echo echo hello
  taskctl bench -c 4 -n 100000 --pipeline 32 echo echo '{"n": 1}'
  taskctl bench --oneshot -o json passwd hash secret`,
		Args: args(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			f.setCalls = cmd.Flags().Changed("calls")
			f.setDuration = cmd.Flags().Changed("duration")
			if err := f.check(); err != nil {
				return &usageError{err}
			}
			return runBench(cmd, opts, &f, a[0], a[1], parseArgs(a[2:]))
		},
	}
	fl := cmd.Flags()
	fl.IntVarP(&f.concurrency, "concurrency", "c", 1, "concurrent callers")
	fl.Int64VarP(&f.calls, "calls", "n", 0, fmt.Sprintf("stop after this many calls in all (at most %d)", maxBenchCalls))
	fl.DurationVarP(&f.duration, "duration", "d", 5*time.Second, fmt.Sprintf("run for this long (at most %v)", maxBenchDuration))
	fl.BoolVar(&f.oneshot, "oneshot", false, "one-shot calls (checkout, call, release) instead of a checkout held by each caller")
	fl.IntVar(&f.pipeline, "pipeline", 0, "pipeline this many calls per batch on each caller's checkout")
	return cmd
}

// benchReport is the result of taskctl bench (and its -o json form).
type benchReport struct {
	Interface   string         `json:"interface"`
	Method      string         `json:"method"`
	Mode        string         `json:"mode"` // held, oneshot or pipeline
	Callers     int            `json:"callers"`
	Pipeline    int            `json:"pipeline"` // calls per batch; 1 without pipelining
	Calls       int64          `json:"calls"`
	DurationSec float64        `json:"duration_sec"`
	CallsPerSec float64        `json:"calls_per_sec"`
	LatencyUS   benchLatencies `json:"latency_us"`
	Interrupted bool           `json:"interrupted,omitempty"`
}

type benchLatencies struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99.9"`
	Max  float64 `json:"max"`
}

func runBench(cmd *cobra.Command, opts *options, f *benchFlags, iface, method string, callArgs []any) error {
	c, err := opts.newClient(iface)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx := cmd.Context()
	if err := checkBenchTarget(ctx, c, f, iface); err != nil {
		return err
	}

	plan := bench.Plan{Callers: f.concurrency, Batch: max(f.pipeline, 1)}
	if f.setCalls {
		plan.Calls, plan.Duration = f.calls, maxBenchDuration
	} else {
		plan.Duration = f.duration
	}
	setup := bench.HeldCheckouts(c, method, callArgs)
	if f.oneshot {
		setup = bench.OneShot(c, method, callArgs)
	}
	stderr := cmd.ErrOrStderr()
	showProgress := isTerminal(stderr)
	if showProgress {
		plan.Progress = progressLine(stderr)
	}
	res, err := bench.Drive(ctx, plan, setup)
	if showProgress {
		fmt.Fprint(stderr, "\r\x1b[K") // clear the progress line
	}
	if err != nil {
		return fmt.Errorf("bench stopped after %d calls: %w", res.Calls, err)
	}
	rep := newBenchReport(iface, method, f, &res)
	if opts.output == "json" {
		return json.NewEncoder(opts.stdout).Encode(rep)
	}
	return renderBench(opts.stdout, rep)
}

// checkBenchTarget fails fast if taskd cannot be reached (a checkout would wait for it until
// --timeout), and if the callers would hold more checkouts than the interface has workers
// (the surplus callers would wait for a worker that is never released).
func checkBenchTarget(ctx context.Context, c *client.Client, f *benchFlags, iface string) error {
	st, err := c.DaemonStatus(ctx) // bounded by the client's Timeout (--timeout)
	if err != nil {
		return err
	}
	if f.oneshot {
		return nil
	}
	for _, is := range st.Interfaces {
		if is.Name == iface && is.MaxWorkers > 0 && f.concurrency > is.MaxWorkers {
			return fmt.Errorf("-c %d: interface %s has max_workers %d, and each caller holds a checkout for the whole run: use -c %d or less, or --oneshot",
				f.concurrency, iface, is.MaxWorkers, is.MaxWorkers)
		}
	}
	return nil
}

func newBenchReport(iface, method string, f *benchFlags, res *bench.Result) benchReport {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	h := &res.Latency
	return benchReport{
		Interface: iface, Method: method, Mode: f.mode(), Callers: f.concurrency, Pipeline: max(f.pipeline, 1),
		Calls: res.Calls, DurationSec: res.Elapsed.Seconds(), CallsPerSec: res.CallsPerSec(),
		LatencyUS: benchLatencies{P50: us(h.Quantile(0.5)), P90: us(h.Quantile(0.9)), P99: us(h.Quantile(0.99)),
			P999: us(h.Quantile(0.999)), Max: us(h.Max())},
		Interrupted: res.Interrupted,
	}
}

// renderBench writes the report for people.
func renderBench(w io.Writer, r benchReport) error {
	mode := map[string]string{
		"held":     "one checkout held by each caller, one call in flight",
		"oneshot":  "one-shot calls (checkout, call, release)",
		"pipeline": fmt.Sprintf("one checkout held by each caller, %d pipelined calls per batch", r.Pipeline),
	}[r.Mode]
	lat := func(us float64) string {
		return time.Duration(us * float64(time.Microsecond)).Round(time.Microsecond).String()
	}
	if r.Interrupted {
		fmt.Fprintln(w, "interrupted: the numbers cover the calls made until then")
	}
	_, err := fmt.Fprintf(w, `%s.%s: %d caller(s), %s
calls       %d in %s
throughput  %.1f calls/s
latency     p50 %s   p90 %s   p99 %s   p99.9 %s   max %s
`, r.Interface, r.Method, r.Callers, mode, r.Calls,
		time.Duration(r.DurationSec*float64(time.Second)).Round(time.Millisecond), r.CallsPerSec,
		lat(r.LatencyUS.P50), lat(r.LatencyUS.P90), lat(r.LatencyUS.P99), lat(r.LatencyUS.P999), lat(r.LatencyUS.Max))
	return err
}

// progressLine returns a bench.Plan.Progress that rewrites one line on w (a terminal).
func progressLine(w io.Writer) func(int64, time.Duration) {
	return func(calls int64, elapsed time.Duration) {
		rate := 0.0
		if elapsed > 0 {
			rate = float64(calls) / elapsed.Seconds()
		}
		fmt.Fprintf(w, "\r\x1b[K%d calls, %.0f calls/s, %s", calls, rate, elapsed.Round(time.Second))
	}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
