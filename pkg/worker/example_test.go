package worker_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/taskd-dev/taskd/pkg/worker"
)

// A complete worker: a method table, handed to Run from main.
func Example() {
	spec := worker.Spec{
		Methods: map[string]worker.Func{
			"upper": func(ctx context.Context, c *worker.Call) (any, error) {
				var s string
				if err := c.Args(&s); err != nil {
					return nil, err
				}
				c.Log.Info("upper-casing")
				return strings.ToUpper(s), nil
			},
		},
	}
	if worker.Interface() == "" { // not started by taskd: this is only an example
		fmt.Println("methods:", len(spec.Methods))
		return
	}
	if err := worker.Run(spec); err != nil {
		log.Fatal(err)
	}
	// Output: methods: 1
}

// Errors with a type name reach the caller as client.RemoteError with that Type.
func ExampleErrorf() {
	verify := func(ctx context.Context, c *worker.Call) (any, error) {
		var hash, password string
		if err := c.Args(&hash, &password); err != nil {
			return nil, err
		}
		if !strings.HasPrefix(hash, "$2") {
			return nil, worker.Errorf("ValueError", "not a bcrypt hash: %.10q", hash)
		}
		return true, nil
	}
	_ = verify
	err := worker.Errorf("ValueError", "cost %d is out of range", 99)
	fmt.Println(err, "/", err.(*worker.Error).Type)
	// Output: cost 99 is out of range / ValueError
}
