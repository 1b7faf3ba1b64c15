package soak

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskd-dev/taskd/internal/procfs"
	"github.com/taskd-dev/taskd/pkg/client"
)

// Options say how Run soaks taskd. Zero values mean the defaults noted.
type Options struct {
	TaskdBin  string // the taskd binary (required)
	WorkerBin string // a binary that calls MaybeRunWorker first: the Go and raw workers (required)
	Root      string // the repository root, for internal/soak/worker.py and sdk/python; default "."

	// Python is the interpreter of the Python workers: default /usr/bin/python3 if it
	// exists, else python3 on PATH. "none" leaves the Python interface out.
	Python string

	Duration time.Duration // the whole run, chaos and calm; default 60s, at least 10s
	Callers  int           // concurrent callers, 1 to 64; default 16
	Seed     uint64        // of the random choices; default from the clock

	// Dir is where the config, the socket, the logs and the record file go; "" means a
	// new temporary directory, removed after a run that passed. Keep its path short: a
	// unix socket path has at most 107 bytes.
	Dir string

	Log io.Writer // progress lines; default io.Discard
}

// calmFor is how long the callers go on after the chaos stops: each must succeed again
// within recoverBound of that moment.
const (
	calmFor      = 4 * time.Second
	recoverBound = 2 * time.Second
)

// Run starts taskd, soaks it as Options say, stops it, and returns the report. The error
// is non-nil if the report fails its bounds (Report.Failures), or if the soak could not
// run: then the report is nil.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.Root = cmp.Or(o.Root, ".")
	o.Duration = cmp.Or(o.Duration, 60*time.Second)
	o.Callers = cmp.Or(o.Callers, 16)
	o.Seed = cmp.Or(o.Seed, uint64(time.Now().UnixNano()))
	if o.Log == nil {
		o.Log = io.Discard
	}
	switch {
	case o.TaskdBin == "" || o.WorkerBin == "":
		return nil, errors.New("soak: Options.TaskdBin and Options.WorkerBin are required")
	case o.Duration < 10*time.Second:
		return nil, fmt.Errorf("soak: a run of %v is too short: at least 10s", o.Duration)
	case o.Callers < 1 || o.Callers > 64:
		return nil, fmt.Errorf("soak: %d callers: want 1 to 64", o.Callers)
	}
	for _, p := range []*string{&o.TaskdBin, &o.WorkerBin, &o.Root} {
		abs, err := filepath.Abs(*p) // taskd runs in the soak's directory
		if err != nil {
			return nil, fmt.Errorf("soak: %w", err)
		}
		*p = abs
	}
	python := findPython(o.Python)
	ownDir := o.Dir == ""
	dir := o.Dir
	if ownDir {
		var err error
		if dir, err = os.MkdirTemp("", "soak-"); err != nil {
			return nil, fmt.Errorf("soak: %w", err)
		}
	}
	started := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Log, "soak %5.1fs: %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, args...))
	}
	r, err := run(ctx, &o, dir, python, logf)
	if err == nil && ownDir && len(r.Failures()) == 0 {
		os.RemoveAll(dir)
	} else if ownDir {
		logf("kept %s (the daemons' logs, the config, the record file)", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("soak: %w", err)
	}
	if f := r.Failures(); len(f) > 0 {
		return r, fmt.Errorf("soak: FAILED: %s", strings.Join(f, "; "))
	}
	return r, nil
}

// findPython returns the Python interpreter to use, or "".
func findPython(want string) string {
	switch want {
	case "none":
		return ""
	case "":
		if _, err := os.Stat("/usr/bin/python3"); err == nil {
			return "/usr/bin/python3"
		}
		want = "python3"
	}
	p, err := exec.LookPath(want)
	if err != nil {
		return ""
	}
	return p
}

func run(ctx context.Context, o *Options, dir, python string, logf func(string, ...any)) (*Report, error) {
	r := &Report{Duration: o.Duration, Callers: o.Callers, Python: python != "", Seed: o.Seed}
	d, err := newDaemon(o, dir, python)
	if err != nil {
		return r, err
	}
	if err := d.start(ctx); err != nil {
		d.sock.Close()
		return r, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = d.stop()
		}
	}()
	logf("taskd ready (pid %d); waiting for its workers", d.current().PID())
	if err := d.settle(ctx, time.Minute); err != nil {
		return r, fmt.Errorf("before the soak: %w", err)
	}
	if err := d.warm(ctx); err != nil {
		return r, fmt.Errorf("warming the workers up: %w", err)
	}
	if err := d.settle(ctx, 30*time.Second); err != nil {
		return r, fmt.Errorf("before the soak: %w", err)
	}
	if r.Start, err = d.measure(ctx); err != nil {
		return r, err
	}

	t := newTally()
	var calm atomic.Int64
	callers, clients, err := newCallers(o, d, t, &calm)
	if err != nil {
		return r, err
	}
	stopCallers := make(chan struct{})
	var cwg sync.WaitGroup
	for _, c := range callers {
		cwg.Go(func() { c.run(stopCallers) })
	}

	ch := &chaos{d: d, dur: o.Duration - calmFor, seed: o.Seed, logf: logf}
	stopChaos := make(chan struct{})
	chaosDone := make(chan struct{})
	go func() { ch.run(stopChaos); close(chaosDone) }()
	logf("chaos for %v with %d callers (seed %d)", ch.dur, o.Callers, o.Seed)
	progress := time.NewTicker(5 * time.Second)
	end := time.NewTimer(ch.dur)
	for waiting := true; waiting; {
		select {
		case <-progress.C:
			logf("%d calls, %d ok, %d overdue; %d kills, %d stops, %d reloads, %d restarts",
				t.attempted.Load(), t.succeeded.Load(), t.overdue(), ch.kills.Load(), ch.stops.Load(), ch.reloads.Load(), ch.restarts.Load())
		case <-end.C:
			waiting = false
		case <-ctx.Done():
			waiting = false
		}
	}
	progress.Stop()
	close(stopChaos)
	<-chaosDone
	calmAt := time.Now()
	calm.Store(calmAt.UnixNano())
	logf("chaos stopped; calm for %v", calmFor)
	select {
	case <-time.After(calmFor):
	case <-ctx.Done():
	}
	close(stopCallers)
	joined := make(chan struct{})
	go func() { cwg.Wait(); close(joined) }()
	select {
	case <-joined:
	case <-time.After(opDeadline + lateBy + 2*time.Second):
		logf("some callers are still in a call")
	}
	r.fill(t, ch, callers, calmAt)
	for _, c := range clients {
		c.Close()
	}

	if err := d.settle(ctx, 30*time.Second); err != nil {
		r.errs = append(r.errs, fmt.Sprintf("after the soak: %v", err))
	}
	if r.End, err = d.measure(ctx); err != nil {
		return r, err
	}
	r.Exits = d.exits(ctx)
	r.ZombiePIDs = d.zombies()
	stopped = true
	if err := d.stop(); err != nil {
		r.errs = append(r.errs, err.Error())
	}
	r.ZombiePIDs = append(r.ZombiePIDs, d.orphans...)
	r.ZombiePIDs = append(r.ZombiePIDs, ownZombies()...)
	if err := r.checkRecords(d.record, t); err != nil {
		return r, err
	}
	for _, e := range ch.errs {
		r.errs = append(r.errs, e.Error())
	}
	if r.Lost > 0 || len(r.errs) > 0 {
		r.errs = append(r.errs, "the last taskd's log ends:\n"+d.current().LogTail(3000))
	}
	logf("done")
	return r, nil
}

// newCallers makes the callers; every four share a client per interface.
func newCallers(o *Options, d *daemon, t *tally, calm *atomic.Int64) ([]*caller, []*client.Client, error) {
	var names []string
	for _, f := range ifaces {
		if f.mode == "py" && d.python == "" {
			continue
		}
		w := 3 // the interfaces callers mostly use; leak and flood now and then
		if f.name == "leak" || f.name == "flood" {
			w = 1
		}
		for range w {
			names = append(names, f.name)
		}
	}
	var all []*client.Client
	var shared map[string]*client.Client
	out := make([]*caller, o.Callers)
	for i := range out {
		if i%4 == 0 {
			shared = map[string]*client.Client{}
			for _, f := range ifaces {
				c, err := client.New(client.Config{Addr: d.current().Addr, Interface: f.name, Timeout: opDeadline})
				if err != nil {
					for _, c := range all {
						c.Close()
					}
					return nil, nil, err
				}
				shared[f.name] = c
				all = append(all, c)
			}
		}
		out[i] = &caller{id: i, t: t, clients: shared, names: names, calm: calm,
			rng: rand.New(rand.NewPCG(o.Seed, uint64(1000+i))), prefix: fmt.Sprintf("s%x", o.Seed&0xffffff)}
	}
	return out, all, nil
}

// exits sums the last taskd's worker exits by reason, over all interfaces.
func (d *daemon) exits(ctx context.Context) map[string]uint64 {
	c, err := client.New(client.Config{Addr: d.current().Addr, Timeout: 5 * time.Second})
	if err != nil {
		return nil
	}
	defer c.Close()
	st, err := c.DaemonStatus(ctx)
	if err != nil {
		return nil
	}
	out := map[string]uint64{}
	for _, is := range st.Interfaces {
		for k, n := range is.Exits {
			out[k] += n
		}
	}
	return out
}

// ownZombies returns this process's children that are zombies (taskd daemons it did not
// reap).
func ownZombies() []int {
	var out []int
	for _, p := range procfs.Children(os.Getpid()) {
		if st, err := procfs.ReadStat(p); err == nil && st.State == 'Z' {
			out = append(out, p)
		}
	}
	return out
}

// checkRecords reads the record file: a nonce recorded twice is a method run twice; a
// record call answered but not recorded was answered without running (misrouted).
func (r *Report) checkRecords(path string, t *tally) error {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	seen := map[string]int{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line != "" {
			seen[line]++
		}
	}
	var twice []string
	for n, k := range seen {
		if k > 1 {
			twice = append(twice, n)
		}
	}
	sort.Strings(twice)
	r.Duplicated += int64(len(twice))
	for _, n := range twice[:min(len(twice), 5)] {
		r.Bad = append(r.Bad, fmt.Sprintf("record(%q) ran %d times", n, seen[n]))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for n := range t.records {
		if seen[n] == 0 {
			r.Misrouted++
			if len(r.Bad) < 10 {
				r.Bad = append(r.Bad, fmt.Sprintf("record(%q) was answered but never ran", n))
			}
		}
	}
	r.Records = len(t.records)
	slices.Sort(r.ZombiePIDs)
	return nil
}
