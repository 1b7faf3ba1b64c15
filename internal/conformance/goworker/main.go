// Command goworker is the Go SDK's worker for the conformance suite: it serves the method
// contract described in package conformance.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/taskd-dev/taskd/pkg/worker"
)

var setups, dones atomic.Int64

func main() {
	err := worker.Run(worker.Spec{
		Setup:        func(context.Context) error { setups.Add(1); fmt.Println("print during setup"); return nil },
		CheckoutDone: func(context.Context) error { dones.Add(1); return nil },
		Default:      echo,
		Methods: map[string]worker.Func{
			"echo": echo,
			"fail": func(_ context.Context, c *worker.Call) (any, error) {
				var msg string
				if err := c.Args(&msg); err != nil {
					return nil, err
				}
				return nil, &worker.Error{Type: "ConformanceError", Msg: msg, Trace: "goworker/main.go: fail"}
			},
			"pid": func(context.Context, *worker.Call) (any, error) { return os.Getpid(), nil },
			"sleep": func(ctx context.Context, c *worker.Call) (any, error) {
				var ms int
				if err := c.Args(&ms); err != nil {
					return nil, err
				}
				time.Sleep(time.Duration(ms) * time.Millisecond)
				return ms, nil
			},
			"spin": func(context.Context, *worker.Call) (any, error) {
				for {
				}
			},
			"bye": func(_ context.Context, c *worker.Call) (any, error) { c.Bye("asked to"); return "bye", nil },
			"log": func(_ context.Context, c *worker.Call) (any, error) {
				var msg string
				if err := c.Args(&msg); err != nil {
					return nil, err
				}
				c.Log.Info(msg)
				return true, nil
			},
			"counts": func(context.Context, *worker.Call) (any, error) {
				return map[string]int64{"setups": setups.Load(), "dones": dones.Load()}, nil
			},
			"print": func(_ context.Context, c *worker.Call) (any, error) {
				var s string
				if err := c.Args(&s); err != nil {
					return nil, err
				}
				fmt.Println(s)
				fmt.Fprintln(os.Stdout, s)
				os.NewFile(1, "fd1").WriteString(s + " (fd 1)\n")
				return "printed", nil
			},
			"logs": func(_ context.Context, c *worker.Call) (any, error) {
				c.Log.Info("one")
				stop := c.Timer("t")
				c.Log.Warn("two")
				stop()
				c.Log.Error("three")
				return "logged", nil
			},
			"wait_cancel": func(ctx context.Context, c *worker.Call) (any, error) {
				var ms int
				if err := c.Args(&ms); err != nil {
					return nil, err
				}
				select {
				case <-ctx.Done():
					return "cancelled", nil
				case <-time.After(time.Duration(ms) * time.Millisecond):
					return "not cancelled", nil
				}
			},
			"cancel_cleanup": func(ctx context.Context, c *worker.Call) (any, error) {
				var path string
				if err := c.Args(&path); err != nil {
					return nil, err
				}
				<-ctx.Done()
				// The cleanup, after the cancel.
				if err := os.WriteFile(path, []byte("cleaned up"), 0o644); err != nil {
					return nil, err
				}
				return "cancelled", nil
			},
			"big": func(_ context.Context, c *worker.Call) (any, error) {
				var n int
				if err := c.Args(&n); err != nil {
					return nil, err
				}
				return strings.Repeat("y", n), nil
			},
			"len": func(_ context.Context, c *worker.Call) (any, error) {
				var s string
				if err := c.Args(&s); err != nil {
					return nil, err
				}
				return utf8.RuneCountInString(s), nil
			},
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "goworker:", err)
		os.Exit(1)
	}
}

func echo(_ context.Context, c *worker.Call) (any, error) {
	if c.NumArgs() == 0 {
		return []any{}, nil
	}
	return json.RawMessage(c.RawArgs()), nil
}
