package soak

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Growth bounds: the last taskd, settled after the soak, against the first, settled
// before it (same workers idle, no client connected).
const (
	fdSlack        = 8
	goroutineSlack = 20
	rssSlack       = 64 << 20
)

// Report is the outcome of a soak: its figures, and whether they are within bounds.
type Report struct {
	Duration time.Duration
	Callers  int
	Python   bool // the Python interface took part
	Seed     uint64

	Attempted, Succeeded int64
	Failed               map[string]int64 // by typed error (see classify)
	Untyped              int64            // failures that match no typed error: a defect
	UntypedSamples       []string
	Lost                 int64 // calls that never returned
	Late                 int64 // calls that returned more than 1s past their deadline
	Duplicated           int64 // a nonce answered twice, or a record call run twice
	Misrouted            int64 // a wrong nonce, a held checkout's call in another pid, a record answered unrun
	Records              int   // record calls answered
	Bad                  []string
	ZombiePIDs           []int // zombie workers, and workers that outlived their taskd

	Start, End sample // the daemon settled before and after the soak

	ByIface map[string][2]int64 // calls attempted and succeeded, by interface

	Kills, Stops, Reloads, Restarts, Cuts, Uncut, Vanished int64
	RestartTimes                                           []string          // e.g. "SIGTERM 1.2s": until the new taskd was ready
	Exits                                                  map[string]uint64 // the last taskd's worker exits, by reason

	Recovery     time.Duration // slowest caller's first success after the chaos stopped
	NotRecovered int           // callers with no success within calmFor

	errs []string // what else went wrong (a restart, the final stop)
}

// fill copies the callers' and the chaos's figures.
func (r *Report) fill(t *tally, ch *chaos, callers []*caller, calmAt time.Time) {
	r.Attempted, r.Succeeded = t.attempted.Load(), t.succeeded.Load()
	r.Late, r.Duplicated, r.Misrouted = t.late.Load(), t.duplicated.Load(), t.misrouted.Load()
	t.mu.Lock()
	r.Failed = maps.Clone(t.failed)
	r.Untyped, r.UntypedSamples = t.nUntyped, slices.Clone(t.untyped)
	r.Lost = int64(len(t.inflight))
	r.Bad = slices.Clone(t.bad)
	r.ByIface = map[string][2]int64{}
	for k, v := range t.byIface {
		r.ByIface[k] = *v
	}
	t.mu.Unlock()
	ch.mu.Lock()
	r.RestartTimes = slices.Clone(ch.downs)
	ch.mu.Unlock()
	r.Kills, r.Stops, r.Reloads, r.Restarts = ch.kills.Load(), ch.stops.Load(), ch.reloads.Load(), ch.restarts.Load()
	r.Cuts, r.Uncut, r.Vanished = ch.cuts.Load(), ch.uncut.Load(), ch.vanished.Load()
	for _, c := range callers {
		first := c.firstOK.Load()
		if first == 0 {
			r.NotRecovered++
			continue
		}
		r.Recovery = max(r.Recovery, time.Duration(first-calmAt.UnixNano()))
	}
}

// Failures lists what makes the soak fail; none means it passed.
func (r *Report) Failures() []string {
	var f []string
	add := func(bad bool, format string, args ...any) {
		if bad {
			f = append(f, fmt.Sprintf(format, args...))
		}
	}
	add(r.Lost > 0, "%d calls lost", r.Lost)
	add(r.Late > 0, "%d calls returned more than %v past their deadline", r.Late, lateBy)
	add(r.Duplicated > 0, "%d duplicated", r.Duplicated)
	add(r.Misrouted > 0, "%d misrouted", r.Misrouted)
	add(len(r.ZombiePIDs) > 0, "zombies or orphaned workers: %v", r.ZombiePIDs)
	add(r.Untyped > 0, "%d untyped errors, e.g. %q", r.Untyped, r.UntypedSamples)
	add(r.End.FDs > r.Start.FDs+fdSlack, "taskd's descriptors grew from %d to %d (bound +%d)", r.Start.FDs, r.End.FDs, fdSlack)
	add(r.End.Goroutines > r.Start.Goroutines+goroutineSlack, "taskd's goroutines grew from %d to %d (bound +%d)",
		r.Start.Goroutines, r.End.Goroutines, goroutineSlack)
	add(r.End.RSS > r.Start.RSS+rssSlack, "taskd's RSS grew from %s to %s (bound +%s)", mib(r.Start.RSS), mib(r.End.RSS), mib(rssSlack))
	add(r.NotRecovered > 0, "%d callers made no successful call within %v after the chaos stopped", r.NotRecovered, calmFor)
	add(r.Recovery > recoverBound, "a caller took %v to recover after the chaos stopped (bound %v)", r.Recovery.Round(time.Millisecond), recoverBound)
	add(r.Restarts < 2, "taskd was restarted %d times, not 2", r.Restarts)
	add(r.Succeeded == 0, "no call succeeded")
	f = append(f, r.errs...)
	if len(f) > 0 && len(r.Bad) > 0 {
		f = append(f, "examples: "+strings.Join(r.Bad, "; "))
	}
	return f
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Write prints the report as a Markdown table, then the one line to grep:
// "SOAK PASS ..." or "SOAK FAIL ...".
func (r *Report) Write(w io.Writer) {
	py := "go, raw, py (Python SDK), leak, flood"
	if !r.Python {
		py = "go, raw, leak, flood (no python3: Python left out)"
	}
	fmt.Fprintf(w, "taskd soak: %v, %d callers, interfaces %s, seed %d\n\n", r.Duration, r.Callers, py, r.Seed)
	fmt.Fprintf(w, "| figure | value | bound |\n|---|---:|---|\n")
	row := func(k, v, bound string) { fmt.Fprintf(w, "| %s | %s | %s |\n", k, v, bound) }
	row("calls attempted", fmt.Sprint(r.Attempted), "")
	row("succeeded", fmt.Sprint(r.Succeeded), "")
	var by []string
	for _, k := range slices.Sorted(maps.Keys(r.ByIface)) {
		by = append(by, fmt.Sprintf("%s %d/%d", k, r.ByIface[k][1], r.ByIface[k][0]))
	}
	row("succeeded/attempted by interface", strings.Join(by, ", "), "")
	for _, k := range slices.Sorted(maps.Keys(r.Failed)) {
		row("failed: "+k, fmt.Sprint(r.Failed[k]), "typed")
	}
	row("failed: untyped", fmt.Sprint(r.Untyped), "0")
	row("lost (never returned)", fmt.Sprint(r.Lost), "0")
	row("returned past deadline + 1s", fmt.Sprint(r.Late), "0")
	row("duplicated", fmt.Sprint(r.Duplicated), "0")
	row("misrouted", fmt.Sprint(r.Misrouted), "0")
	row("zombies and orphaned workers", fmt.Sprint(len(r.ZombiePIDs)), "0")
	row("record calls checked", fmt.Sprint(r.Records), "")
	row("taskd fds: start → end", fmt.Sprintf("%d → %d", r.Start.FDs, r.End.FDs), fmt.Sprintf("+%d", fdSlack))
	row("taskd goroutines: start → end", fmt.Sprintf("%d → %d", r.Start.Goroutines, r.End.Goroutines), fmt.Sprintf("+%d", goroutineSlack))
	row("taskd RSS: start → end", fmt.Sprintf("%s → %s", mib(r.Start.RSS), mib(r.End.RSS)), "+"+mib(rssSlack))
	row("slowest caller recovery after chaos", r.Recovery.Round(time.Millisecond).String(), recoverBound.String())
	row("callers not recovered", fmt.Sprint(r.NotRecovered), "0")
	row("chaos: workers SIGKILLed", fmt.Sprint(r.Kills), "")
	row("chaos: workers SIGSTOPped > call_timeout", fmt.Sprint(r.Stops), "")
	row("chaos: reloads (SIGHUP, new env)", fmt.Sprint(r.Reloads), "")
	row("chaos: daemon restarts, until ready again", fmt.Sprintf("%d (%s)", r.Restarts, strings.Join(r.RestartTimes, ", ")), "2")
	row("chaos: non-reading clients cut off / not cut", fmt.Sprintf("%d / %d", r.Cuts, r.Uncut), "")
	row("chaos: clients that vanished", fmt.Sprint(r.Vanished), "")
	var exits []string
	for _, k := range slices.Sorted(maps.Keys(r.Exits)) {
		exits = append(exits, fmt.Sprintf("%s %d", k, r.Exits[k]))
	}
	row("worker exits (last taskd)", strings.Join(exits, ", "), "")
	fmt.Fprintln(w)
	verdict := "PASS"
	if len(r.Failures()) > 0 {
		verdict = "FAIL"
	}
	var failed int64
	for _, n := range r.Failed {
		failed += n
	}
	fmt.Fprintf(w, "SOAK %s duration=%v callers=%d attempted=%d succeeded=%d failed_typed=%d untyped=%d lost=%d late=%d duplicated=%d misrouted=%d zombies=%d fds=%d->%d goroutines=%d->%d rss_mib=%.1f->%.1f recovery=%v\n",
		verdict, r.Duration, r.Callers, r.Attempted, r.Succeeded, failed, r.Untyped, r.Lost, r.Late, r.Duplicated, r.Misrouted,
		len(r.ZombiePIDs), r.Start.FDs, r.End.FDs, r.Start.Goroutines, r.End.Goroutines,
		float64(r.Start.RSS)/(1<<20), float64(r.End.RSS)/(1<<20), r.Recovery.Round(time.Millisecond))
}
