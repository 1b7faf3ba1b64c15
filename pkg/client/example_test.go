package client_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/taskd-dev/taskd/pkg/client"
)

// A transaction-style sequence of calls on one worker: every call of a checkout goes to
// the same process.
func ExampleClient_Checkout() {
	c, err := client.New(client.Config{Interface: "db"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	co, err := c.Checkout(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer co.Release()
	if err := co.Call(ctx, "begin", nil); err != nil {
		fmt.Println(err)
		return
	}
	var id int64
	if err := co.Call(ctx, "insert", &id, map[string]any{"name": "ada"}); err != nil {
		fmt.Println(err)
		return
	}
	if err := co.Call(ctx, "commit", nil); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("inserted", id)
}

// A one-shot call: check out, call, release.
func ExampleClient_Call() {
	c, err := client.New(client.Config{Interface: "passwd"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	var hashed string
	if err := c.Call(context.Background(), "hash", &hashed, "secret"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(hashed)
}

// Telling the error kinds apart.
func Example_errors() {
	c, err := client.New(client.Config{Interface: "passwd"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	var ok bool
	err = c.Call(context.Background(), "verify", &ok, "$2a$...", "secret")
	var remote *client.RemoteError
	switch {
	case err == nil:
		fmt.Println("verified:", ok)
	case errors.As(err, &remote):
		fmt.Println("the worker raised", remote.Type, remote.Message)
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Println("too slow; the worker was killed")
	case errors.Is(err, client.ErrWorkerLost):
		fmt.Println("the worker died; retry")
	case errors.Is(err, client.ErrOverloaded), errors.Is(err, client.ErrShuttingDown):
		fmt.Println("back off and retry")
	case errors.Is(err, client.ErrUnknownInterface), errors.Is(err, client.ErrUnavailable):
		fmt.Println("configuration problem:", err)
	case errors.Is(err, client.ErrUnreachable):
		fmt.Println("is taskd running?", err)
	default:
		fmt.Println(err)
	}
}

// Pipelining: send several calls, then collect the results.
func ExampleCheckout_Go() {
	c, err := client.New(client.Config{Interface: "echo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx := context.Background()
	co, err := c.Checkout(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer co.Release()
	var ps []*client.Pending
	for i := range 3 {
		ps = append(ps, co.Go("echo", i))
	}
	for _, p := range ps {
		var r []int
		if err := p.Wait(ctx, &r); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(r)
	}
}
