package client_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/taskd-dev/taskd/pkg/client"
)

// A Client of several daemons: each checkout and one-shot call goes to one of them, and
// one that cannot be reached (here the second address, where no taskd listens) is skipped:
// the calls it could not take go to the other. Stats has a row per daemon.
func ExampleConfig_addrs() {
	c, err := client.New(client.Config{
		Interface: "echo",
		Addrs:     []string{os.Getenv("TASKD_ADDR"), "unix:/nonexistent/taskd.sock"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 4 {
		var echoed []int
		if err := c.Call(ctx, "echo", &echoed, i); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(echoed)
	}
	for i, d := range c.Stats().Daemons {
		fmt.Printf("daemon %d served %d\n", i, d.Checkouts)
	}
	// Output:
	// [0]
	// [1]
	// [2]
	// [3]
	// daemon 0 served 4
	// daemon 1 served 0
}
