package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/taskd-dev/taskd/pkg/client"
)

// Direct leases (docs/worker-protocol.md): a table of its own, measured with the minimal
// lease-speaking worker (internal/taskdtest/leaseworker, Suite.LeaseBin), whose direct pipe
// is the floor: the worker driven over its stdin/stdout, a held checkout relayed by taskd,
// and a held checkout over a direct lease (taskd off the data path).

// leaseScenarios are the rows of the direct-lease table; base is the pipe's row.
var leaseScenarios = []struct {
	label  string
	kind   kind
	direct client.DirectMode
}{
	{"(g) minimal lease worker, direct pipe, no taskd (as (f))", kindPipe, client.DirectOff},
	{"(g) taskd, held checkout, relayed", kindHeld, client.DirectOff},
	{"(g) taskd, held checkout over a direct lease", kindHeld, client.DirectAuto},
}

// measureLease runs the direct-lease scenarios at every caller count, s.Runs times
// (interleaved), and returns their cells keyed by (row, callers).
func (s *Suite) measureLease(ctx context.Context, hz int64) (cells map[[2]int]cell, err error) {
	workers := s.callWorkers()
	d, _, err := startDaemon(ctx, s.TaskdBin, s.LeaseBin, workers, workers)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, stopDaemon(d)) }()
	if _, err := waitIdle(ctx, d, workers, time.Minute); err != nil {
		return nil, err
	}
	var pipes []*pipeWorker
	defer func() {
		for _, p := range pipes {
			_ = p.Close()
		}
	}()
	for range slices.Max(s.Callers) {
		p, err := startPipeWorker(s.LeaseBin, 10*time.Second)
		if err != nil {
			return nil, err
		}
		pipes = append(pipes, p)
	}
	clients := map[client.DirectMode]*client.Client{}
	for _, m := range []client.DirectMode{client.DirectOff, client.DirectAuto} {
		c, err := client.New(client.Config{Addr: d.Addr, Interface: "echo", Direct: m})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		clients[m] = c
	}
	runs := map[[2]int][]run{}
	for r := range s.Runs {
		for si, sc := range leaseScenarios {
			for _, n := range s.Callers {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				one, err := s.measure(ctx, hz, scenario{label: sc.label, kind: sc.kind, payload: smallPayload}, n, d, pipes, clients[sc.direct])
				if err != nil {
					return nil, fmt.Errorf("%s, %d callers: %w", sc.label, n, err)
				}
				fmt.Fprintf(s.Log, "lease run %d: %s, %d callers: %s calls/s\n", r+1, sc.label, n, fmtInt(one.callsPerSec))
				runs[[2]int{si, n}] = append(runs[[2]int{si, n}], one)
			}
		}
	}
	cells = map[[2]int]cell{}
	for key, rs := range runs {
		cells[key] = cell{run: median(rs)}
	}
	for key, cl := range cells {
		if base := cells[[2]int{0, key[1]}]; base.callsPerSec > 0 {
			cl.ratio = cl.callsPerSec / base.callsPerSec
			cells[key] = cl
		}
	}
	return cells, nil
}

// reportLease writes the direct-lease table.
func (s *Suite) reportLease(cells map[[2]int]cell) {
	w := s.Out
	fmt.Fprintf(w, "\n#### Direct leases: the minimal lease-speaking worker (internal/taskdtest/leaseworker)\n\n")
	fmt.Fprintln(w, "| scenario | callers | calls/s | × pipe | p50 | p99 | taskd CPU/call | all CPU/call |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|")
	for si, sc := range leaseScenarios {
		for _, n := range s.Callers {
			cl := cells[[2]int{si, n}]
			taskdCPU := "–"
			if cl.taskdCPU >= 0 {
				taskdCPU = fmt.Sprintf("%.2f µs", cl.taskdCPU)
			}
			fmt.Fprintf(w, "| %s | %d | %s | %.2f× | %s | %s | %s | %.1f µs |\n", sc.label, n, fmtInt(cl.callsPerSec),
				cl.ratio, fmtLatency(cl.p50), fmtLatency(cl.p99), taskdCPU, cl.allCPU)
		}
	}
	fmt.Fprintln(w, `
(g): the same 50-byte echo, with a single-goroutine worker that reads with poll(2) and
writes with write(2) (about 300 lines, no SDK). Relayed: as (b). Over a direct lease: the
client talks to the worker over a socketpair that taskd handed both at the checkout; taskd
CPU/call is what the daemon spent per call while it was off the data path.`)
}

// leaseBinOK resolves s.LeaseBin to an absolute path; false if it is not set.
func (s *Suite) leaseBinOK() (bool, error) {
	if s.LeaseBin == "" {
		return false, nil
	}
	abs, err := filepath.Abs(s.LeaseBin)
	if err == nil {
		_, err = os.Stat(abs)
	}
	if err != nil {
		return false, fmt.Errorf("bench: lease worker: %w (run make bench, which builds it)", err)
	}
	s.LeaseBin = abs
	return true, nil
}
