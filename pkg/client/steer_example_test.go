package client_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/taskd-dev/taskd/pkg/client"
)

// Draining an interface for maintenance: taskd refuses new checkouts of it at once with
// ErrDraining (checkouts already held go on), until Resume. Admin requests such as these
// are allowed to root, to taskd's own user, and to the peers that taskd's admin setting
// names (ErrNotPermitted for anyone else).
func ExampleClient_Drain() {
	c, err := client.New(client.Config{Interface: "echo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Drain(ctx, "echo"); err != nil {
		fmt.Println(err)
		return
	}
	var r []string
	err = c.Call(ctx, "echo", &r, "while drained")
	fmt.Println("drained:", errors.Is(err, client.ErrDraining))

	if _, err := c.Resume(ctx, "echo"); err != nil {
		fmt.Println(err)
		return
	}
	err = c.Call(ctx, "echo", &r, "resumed")
	fmt.Println(r, err)
	// Output:
	// drained: true
	// [resumed] <nil>
}
