// Command echo is a taskd worker for tests, benchmarks and trying taskd out.
//
// Methods: "echo" (and any function-style call) returns its arguments array as is;
// "sleep" MS sleeps MS milliseconds (or until cancelled) and returns true; "fail" returns
// an error of type "EchoError"; "pid" returns the worker's process id; "bye" asks taskd to
// retire the worker after this checkout; "log" sends an info and a warn record with its
// reply.
package main

import (
	"context"
	"log"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/pkg/worker"
)

func main() {
	err := worker.Run(worker.Spec{
		Default: echo,
		Methods: map[string]worker.Func{
			"echo":  echo,
			"sleep": sleep,
			"fail": func(_ context.Context, c *worker.Call) (any, error) {
				return nil, worker.Errorf("EchoError", "fail called with %s", c.RawArgs())
			},
			"pid": func(context.Context, *worker.Call) (any, error) { return os.Getpid(), nil },
			"bye": func(_ context.Context, c *worker.Call) (any, error) {
				c.Bye("asked to by the bye method")
				return true, nil
			},
			"log": func(_ context.Context, c *worker.Call) (any, error) {
				c.Log.Info("echo says hello", zap.Int("args", c.NumArgs()))
				c.Log.Warn("echo warns you", zap.String("worker", worker.ID()))
				return true, nil
			},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
}

// echo returns the arguments without decoding them.
func echo(_ context.Context, c *worker.Call) (any, error) { return c.RawArgs(), nil }

func sleep(ctx context.Context, c *worker.Call) (any, error) {
	var ms int64
	if err := c.Args(&ms); err != nil {
		return nil, err
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return true, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
