package taskdtest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/taskd-dev/taskd/pkg/client"
	"github.com/taskd-dev/taskd/pkg/taskdtest"
	"github.com/taskd-dev/taskd/pkg/worker"
)

// A Go interface served by the test binary itself, called once. In a test, use
// taskdtest.Start(t, cfg), which stops the server when the test ends; New and Close are
// for Example functions and TestMain.
func ExampleNew() {
	srv, err := taskdtest.New(taskdtest.Config{Interfaces: map[string]taskdtest.Interface{
		"upper": {Worker: worker.Spec{Methods: map[string]worker.Func{
			"upper": func(_ context.Context, c *worker.Call) (any, error) {
				var s string
				err := c.Args(&s)
				return strings.ToUpper(s), err
			},
		}}},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var s string
	if err := srv.Client("upper").Call(ctx, "upper", &s, "hello, taskd"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s)
	// Output: HELLO, TASKD
}

// A checkout keeps one worker process for its calls, so per-process state carries from
// call to call: here a counter, which each worker process has its own copy of (each runs
// this function again, up to New). YAML sets more keys of the interface.
func ExampleServer_Client() {
	count := 0
	srv, err := taskdtest.New(taskdtest.Config{Interfaces: map[string]taskdtest.Interface{
		"counter": {
			Worker: worker.Spec{Methods: map[string]worker.Func{
				"next": func(context.Context, *worker.Call) (any, error) {
					count++
					return count, nil
				},
			}},
			YAML: "max_workers: 1\ncall_timeout: 5s",
		},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	co, err := srv.Client("counter").Checkout(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer co.Release()
	for range 3 {
		var n int
		if err := co.Call(ctx, "next", &n); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(n)
	}
	fmt.Println("the test's own count:", count)
	// Output:
	// 1
	// 2
	// 3
	// the test's own count: 0
}

// NewClient makes a client with a config of your own (here a short Timeout); the
// Server fills in Addr and closes the client with itself. A method that returns an error
// is a *client.RemoteError for the caller.
func ExampleServer_NewClient() {
	srv, err := taskdtest.New(taskdtest.Config{Interfaces: map[string]taskdtest.Interface{
		"strict": {Worker: worker.Spec{Default: func(_ context.Context, c *worker.Call) (any, error) {
			return nil, worker.Errorf("ValueError", "no arguments allowed, got %d", c.NumArgs())
		}}},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	c, err := srv.NewClient(client.Config{Interface: "strict", Timeout: 5 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	err = c.Call(context.Background(), "", nil, 1, 2)
	var re *client.RemoteError
	if errors.As(err, &re) {
		fmt.Println(re.Type+":", re.Message)
	}
	// Output: ValueError: no arguments allowed, got 2
}
