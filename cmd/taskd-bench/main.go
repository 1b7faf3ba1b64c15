// Command taskd-bench is the benchmark behind `make bench`: it starts a taskd with an echo
// interface and compares its calls with the same echo worker driven directly over its
// pipes, then prints a Markdown report on stdout (progress on stderr). See internal/bench.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/taskd-dev/taskd/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the flag package printed the usage
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "taskd-bench: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("taskd-bench", flag.ContinueOnError)
	var s bench.Suite
	bin := fs.String("bin", "bin", "directory holding the taskd, echo-worker and lease-worker binaries")
	callers := fs.String("callers", "1,8,32", "comma-separated caller counts")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	fs.DurationVar(&s.Duration, "d", 0, "length of one measured run (default 2s)")
	fs.IntVar(&s.Runs, "runs", 0, "runs per cell; the median is reported (default 3)")
	fs.DurationVar(&s.Warmup, "warmup", 0, "unmeasured load before each run (default 100ms; negative: none)")
	fs.IntVar(&s.Pipeline, "pipeline", 0, "calls per pipelined batch (default 32)")
	fs.IntVar(&s.Conns, "conns", 0, "client.Config.Conns of the benchmark's Client (default: its default, GOMAXPROCS up to 8)")
	fs.IntVar(&s.RSSWorkers, "rss-workers", 0, "idle workers for the memory measurement (default 100; negative: skip)")
	fs.IntVar(&s.Starts, "starts", 0, "daemon starts for the first-checkout measurement (default 3; negative: skip)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for f := range strings.SplitSeq(*callers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-callers %q: want positive integers such as 1,8,32", *callers)
		}
		s.Callers = append(s.Callers, n)
	}
	s.TaskdBin = filepath.Join(*bin, "taskd")
	s.EchoBin = filepath.Join(*bin, "echo-worker")
	s.LeaseBin = filepath.Join(*bin, "lease-worker")
	s.Out = os.Stdout
	s.Log = os.Stderr
	if *quiet {
		s.Log = io.Discard
	}
	return bench.RunSuite(ctx, s)
}
