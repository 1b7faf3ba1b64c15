package client_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/taskd-dev/taskd/pkg/client"
)

// An interface whose allow list in taskd's config does not name this program's user (or
// its groups, or its TLS client certificate) refuses its checkouts and one-shot calls with
// ErrForbidden; the error names the interface and who taskd saw. Status shows who may use
// each interface. Here "locked" has `allow: {}`: nobody may use it.
func ExampleErrForbidden() {
	c, err := client.New(client.Config{Interface: "locked"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	err = c.Call(ctx, "echo", nil, "hello")
	fmt.Println("forbidden:", errors.Is(err, client.ErrForbidden))

	st, err := c.DaemonStatus(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, is := range st.Interfaces {
		fmt.Printf("%s may be used by %s\n", is.Name, is.Allow)
	}
	// Output:
	// forbidden: true
	// echo may be used by anyone
	// locked may be used by nobody
}

func ExampleAccess_String() {
	fmt.Println((*client.Access)(nil))
	fmt.Println(&client.Access{})
	fmt.Println(&client.Access{Users: []string{"www-data"}, Groups: []string{"web", "ops"}, UIDs: []int{33}})
	// Output:
	// anyone
	// nobody
	// users www-data; groups web, ops; uids 33
}
