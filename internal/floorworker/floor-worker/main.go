// Command floor-worker is the minimal single-goroutine echo worker (package floorworker):
// the floor that benchmarks set the Go SDK's echo worker against.
package main

import (
	"fmt"
	"os"

	"github.com/taskd-dev/taskd/internal/floorworker"
)

func main() {
	if err := floorworker.Serve(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "floor-worker:", err)
		os.Exit(1)
	}
}
