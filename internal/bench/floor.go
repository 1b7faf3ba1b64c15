package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// The floor of the table and the figures of issue 14's "scale with cores": row (f), the
// minimal single-goroutine worker (internal/taskdtest/leaseworker, Suite.LeaseBin) on a direct pipe, beside the Go
// SDK worker's pipe (a); and what the callers' own process spent per call (the client's
// CPU), with one-shot calls over held ones.

// direct reports whether scenarios of kind k drive worker processes over their pipes,
// without taskd.
func (k kind) direct() bool { return k == kindPipe || k == kindMinimal }

// findFloor resolves s.LeaseBin; a missing binary leaves the floor out (an older bin/).
func (s *Suite) findFloor() error {
	if s.LeaseBin == "" {
		return nil
	}
	abs, err := filepath.Abs(s.LeaseBin)
	if err == nil {
		_, err = os.Stat(abs)
	}
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(s.Log, "no minimal worker at %s: row (f) left out (make bench builds it)\n", s.LeaseBin)
		s.LeaseBin = ""
		return nil
	}
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	s.LeaseBin = abs
	return nil
}

// startFloor starts n minimal workers, one per caller of the largest caller count.
func (s *Suite) startFloor(n int) error {
	if s.LeaseBin == "" {
		return nil
	}
	for range n {
		p, err := startPipeWorker(s.LeaseBin, 10*time.Second)
		if err != nil {
			return err
		}
		s.floor = append(s.floor, p)
	}
	return nil
}

func (s *Suite) stopFloor() {
	for _, p := range s.floor {
		_ = p.Close()
	}
	s.floor = nil
}

// skip reports whether scenario sc is left out of this run.
func (s *Suite) skip(sc scenario) bool { return sc.kind == kindMinimal && s.LeaseBin == "" }

// numScenarios is the number of scenarios this run measures.
func (s *Suite) numScenarios() int {
	n := 0
	for _, sc := range scenarios {
		if !s.skip(sc) {
			n++
		}
	}
	return n
}

// pipesFor returns the workers that a direct-pipe scenario drives.
func (s *Suite) pipesFor(sc scenario, pipes []*pipeWorker) []*pipeWorker {
	if sc.kind == kindMinimal {
		return s.floor
	}
	return pipes
}

// scenarioIndex returns the index in scenarios of the first scenario of kind k with
// payload p, or -1.
func scenarioIndex(k kind, p string) int {
	for i, sc := range scenarios {
		if sc.kind == k && sc.payload == p {
			return i
		}
	}
	return -1
}

// reportFloor writes the floor and client figures.
func (s *Suite) reportFloor(cells map[[2]int]cell) {
	w := s.Out
	pipe, floor := scenarioIndex(kindPipe, smallPayload), scenarioIndex(kindMinimal, smallPayload)
	held, once := scenarioIndex(kindHeld, smallPayload), scenarioIndex(kindOneShot, smallPayload)
	held4k := scenarioIndex(kindHeld, largePayload)
	fmt.Fprintln(w, "\n| floor and client (issue 14) | callers | measured |")
	fmt.Fprintln(w, "|---|--:|--:|")
	for _, n := range s.Callers {
		if s.LeaseBin != "" {
			f, p := cells[[2]int{floor, n}], cells[[2]int{pipe, n}]
			fmt.Fprintf(w, "| Go SDK echo worker on a direct pipe (a) / minimal worker (f), calls/s | %d | %.2f× |\n", n, ratio(p.callsPerSec, f.callsPerSec))
		}
		h, o, h4 := cells[[2]int{held, n}], cells[[2]int{once, n}], cells[[2]int{held4k, n}]
		fmt.Fprintf(w, "| one-shot Client.Call (c) / held checkout (b), calls/s | %d | %.2f× |\n", n, ratio(o.callsPerSec, h.callsPerSec))
		fmt.Fprintf(w, "| 4 KiB call (e): client CPU/call (this process: callers + client.Client) | %d | %.1f µs |\n", n, h4.clientCPU)
		fmt.Fprintf(w, "| 50-byte call (b): client CPU/call | %d | %.1f µs |\n", n, h.clientCPU)
	}
	fmt.Fprintln(w, `
(f) answers each call with its arguments from one goroutine with plain read(2)/write(2)
(internal/taskdtest/leaseworker, Suite.LeaseBin), the cheapest a worker can be; its "× pipe" is over itself. Client
CPU/call: this benchmark process's user+system CPU over the run divided by the calls: the
caller goroutines and client.Client (encoding, the connections' readers, decoding into a
json.RawMessage), nothing of taskd's or the workers'.`)
	if s.Conns > 0 {
		fmt.Fprintf(w, "The Client of (b)–(e) had Config.Conns = %d.\n", s.Conns)
	}
	fmt.Fprintln(w)
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}
