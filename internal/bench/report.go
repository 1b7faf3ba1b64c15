package bench

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// report writes the Markdown report.
func (s *Suite) report(version string, cells map[[2]int]cell, st *startupResult, mem *memResult, afterRSS int64, took time.Duration) {
	w := s.Out
	fmt.Fprintf(w, "### taskd benchmark (`make bench`)\n\n")
	fmt.Fprintf(w, "- machine: %s\n", machine())
	fmt.Fprintf(w, "- taskd %s; worker: the Go SDK echo worker (examples/echo); payload: one %d-byte string (4 KiB in (e)), echoed back\n",
		version, len(smallPayload))
	fmt.Fprintf(w, "- each cell: median of %d run(s) × %v (runs interleaved across scenarios, %v warm-up before each); whole suite took %v\n\n",
		s.Runs, s.Duration, max(s.Warmup, 0), took.Round(time.Second))

	fmt.Fprintln(w, "| scenario | callers | calls/s | × pipe | p50 | p99 | taskd CPU/call | all CPU/call |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|")
	for si, sc := range scenarios {
		if s.skip(sc) {
			continue
		}
		for _, n := range s.Callers {
			cl := cells[[2]int{si, n}]
			label := sc.label
			if sc.kind == kindPipelined {
				label = fmt.Sprintf("(d) taskd, %d pipelined Go per checkout", s.Pipeline)
			}
			taskdCPU := "–"
			if cl.taskdCPU >= 0 {
				taskdCPU = fmt.Sprintf("%.1f µs", cl.taskdCPU)
			}
			fmt.Fprintf(w, "| %s | %d | %s | %.2f× | %s | %s | %s | %.1f µs |\n", label, n, fmtInt(cl.callsPerSec),
				cl.ratio, fmtLatency(cl.p50), fmtLatency(cl.p99), taskdCPU, cl.allCPU)
		}
	}
	fmt.Fprintf(w, `
calls/s: completed calls over the run's wall time, all callers together. × pipe: calls/s over
(a)'s at the same caller count (4 KiB rows: over the 4 KiB pipe). p50/p99: latency of one call
as its caller saw it (for (d): from the start of its batch of %d until its Wait returned).
CPU/call: user+system CPU time (/proc/PID/stat utime+stime, delta over the run) divided by the
calls; taskd = the daemon process alone; all = taskd + its worker processes + this benchmark
process (the callers), or for (a) this process + the directly driven workers. Callers are
goroutines: (a) one worker process per caller over its own stdin/stdout pipes, newline JSON,
one call in flight ((f): the same, to the minimal worker); (b)–(e) share one client.Client
(its unix-socket connections to taskd: up to GOMAXPROCS, at most 8, as the load needs);
(b), (d) and (e) hold one checkout per caller for the whole run; (c) is Client.Call
(checkout + call + release) per call.

`, s.Pipeline)

	if st != nil || mem != nil || afterRSS > 0 {
		fmt.Fprintln(w, "| start-up and memory | measured |")
		fmt.Fprintln(w, "|---|--:|")
	}
	if st != nil {
		fmt.Fprintf(w, "| first checkout after start, min_idle 1: new Client, Checkout + Release (median of %d starts) | %s |\n", s.Starts, fmtLatency(st.first))
		fmt.Fprintf(w, "| second Checkout + Release on that Client | %s |\n", fmtLatency(st.second))
		fmt.Fprintf(w, "| taskd start → answers Ping / → its worker is idle | %s / %s |\n", fmtMs(st.ready), fmtMs(st.idle))
		fmt.Fprintf(w, "| taskd RSS, 1 idle worker | %s |\n", fmtMiB(st.rss))
	}
	if mem != nil {
		fmt.Fprintf(w, "| taskd RSS, %d idle workers (target ≤ 30 MiB + 64 KiB each = %s) | %s |\n", mem.workers, fmtMiB(mem.limit()), fmtMiB(mem.rss))
		fmt.Fprintf(w, "| taskd start → %d workers idle | %s |\n", mem.workers, fmtMs(mem.spawn))
	}
	if afterRSS > 0 {
		fmt.Fprintf(w, "| taskd RSS after the runs above (%d workers) | %s |\n", s.callWorkers(), fmtMiB(afterRSS))
	}
	if st != nil {
		fmt.Fprintln(w, `
First checkout: the daemon is started with min_idle 1; once it answers Ping and its status shows
the worker idle, a new client.Client (not yet connected) is created and the time is taken
around Checkout (which dials the socket, sends the checkout and gets it granted) and
Release (which sends the release). The second row repeats that on the now connected Client.`)
	}
	s.reportFloor(cells) // floor.go
	s.targets(cells, st, mem)
}

// targets writes the targets as a table, each with what this run measured.
func (s *Suite) targets(cells map[[2]int]cell, st *startupResult, mem *memResult) {
	type row struct {
		what, got string
		ok        bool
	}
	var rows []row
	has := func(n int) bool { return slices.Contains(s.Callers, n) }
	get := func(si, n int) cell { return cells[[2]int{si, n}] }
	held, once := scenarioIndex(kindHeld, smallPayload), scenarioIndex(kindOneShot, smallPayload)
	pipelined := scenarioIndex(kindPipelined, smallPayload)
	for _, n := range []int{1, 8} {
		if has(n) {
			r := get(held, n).ratio
			rows = append(rows, row{fmt.Sprintf("held-checkout calls/s ≥ 0.5× direct pipe, %d caller(s)", n), fmt.Sprintf("%.2f×", r), r >= 0.5})
		}
	}
	if has(8) {
		c := get(held, 8).taskdCPU
		rows = append(rows, row{"taskd CPU ≤ 25 µs per call, 8 callers (held checkout)", fmt.Sprintf("%.1f µs", c), c <= 25})
	}
	if has(1) {
		c := get(pipelined, 1).callsPerSec
		rows = append(rows, row{fmt.Sprintf("pipelined calls on one checkout ≥ 50k calls/s (1 caller, batches of %d)", s.Pipeline), fmtInt(c), c >= 50000})
	}
	for _, n := range []int{1, 8} {
		if has(n) {
			r := get(once, n).callsPerSec / get(held, n).callsPerSec
			rows = append(rows, row{fmt.Sprintf("one-shot Client.Call ≥ 0.75× held checkout, %d caller(s)", n), fmt.Sprintf("%.2f×", r), r >= 0.75})
		}
	}
	if st != nil {
		rows = append(rows, row{"first checkout after start (min_idle 1) ≤ 1 ms", fmtLatency(st.first), st.first <= time.Millisecond})
	}
	// Issue 14: direct and warm leases, the Go SDK against the floor.
	floor, pipe := scenarioIndex(kindMinimal, smallPayload), scenarioIndex(kindPipe, smallPayload)
	for _, n := range []int{1, 8} {
		if !has(n) {
			continue
		}
		r := get(held, n).ratio
		rows = append(rows, row{fmt.Sprintf("issue 14: held checkout over a direct lease ≥ 0.8× the direct pipe to the same worker, %d caller(s)", n), fmt.Sprintf("%.2f×", r), r >= 0.8})
		if s.LeaseBin != "" {
			r := ratio(get(pipe, n).callsPerSec, get(floor, n).callsPerSec)
			rows = append(rows, row{fmt.Sprintf("issue 14: Go SDK worker on a direct pipe ≥ 0.7× the minimal worker, %d caller(s)", n), fmt.Sprintf("%.2f×", r), r >= 0.7})
		}
	}
	if has(1) {
		r := ratio(get(once, 1).callsPerSec, get(held, 1).callsPerSec)
		rows = append(rows, row{"issue 14: one-shot Client.Call ≥ 0.8× held checkout, 1 caller", fmt.Sprintf("%.2f×", r), r >= 0.8})
	}
	if mem != nil {
		limit := mem.limit()
		rows = append(rows, row{fmt.Sprintf("taskd RSS ≤ 30 MiB + 64 KiB per idle worker (%d workers: %s)", mem.workers, fmtMiB(limit)), fmtMiB(mem.rss), mem.rss <= limit})
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(s.Out, "\n| target (issue 4 unless said) | this run | met |")
	fmt.Fprintln(s.Out, "|---|--:|:-:|")
	for _, r := range rows {
		fmt.Fprintf(s.Out, "| %s | %s | %s |\n", r.what, r.got, map[bool]string{true: "yes", false: "**no**"}[r.ok])
	}
}

// fmtInt formats a rate as an integer with thousands separators.
func fmtInt(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// fmtLatency formats d: µs with one decimal below 100 µs, whole µs below 1 ms, then ms.
func fmtLatency(d time.Duration) string {
	us := float64(d) / float64(time.Microsecond)
	switch {
	case us < 100:
		return fmt.Sprintf("%.1f µs", us)
	case us < 1000:
		return fmt.Sprintf("%.0f µs", us)
	}
	return fmtMs(d)
}

func fmtMs(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	if ms < 10 {
		return fmt.Sprintf("%.2f ms", ms)
	}
	return fmt.Sprintf("%.1f ms", ms)
}

func fmtMiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
