// Command taskd-soak is the chaos soak behind `make soak`: it runs a real taskd with real
// workers under callers and chaos for a while, prints a table of figures and one line to
// grep (SOAK PASS or SOAK FAIL), and exits non-zero if the figures are out of bounds. It
// is also its own Go and raw workers (see internal/soak).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/taskd-dev/taskd/internal/soak"
)

func main() {
	soak.MaybeRunWorker()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "taskd-soak: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("taskd-soak", flag.ContinueOnError)
	var o soak.Options
	bin := fs.String("bin", "bin", "directory holding the taskd binary")
	fs.StringVar(&o.Root, "root", ".", "the taskd source tree (for the Python worker and SDK)")
	fs.StringVar(&o.Python, "python", "", `Python interpreter (default /usr/bin/python3, else python3; "none": no Python workers)`)
	fs.DurationVar(&o.Duration, "d", 0, "length of the run, chaos then 4s of calm (default 60s; $SOAK if set)")
	fs.IntVar(&o.Callers, "callers", 0, "concurrent callers (default 16)")
	fs.Uint64Var(&o.Seed, "seed", 0, "random seed (default: from the clock)")
	fs.StringVar(&o.Dir, "dir", "", "working directory (default: a temporary one, kept if the run fails)")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.Duration == 0 && os.Getenv("SOAK") != "" {
		d, err := time.ParseDuration(os.Getenv("SOAK"))
		if err != nil {
			return fmt.Errorf("$SOAK=%q: want a duration such as 60s or 5m", os.Getenv("SOAK"))
		}
		o.Duration = d
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	o.TaskdBin, o.WorkerBin = filepath.Join(*bin, "taskd"), self
	if !*quiet {
		o.Log = os.Stderr
	}
	r, err := soak.Run(ctx, o)
	if r != nil {
		r.Write(os.Stdout)
	}
	return err
}
