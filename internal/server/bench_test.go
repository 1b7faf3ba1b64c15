package server_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/server"
	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// startInProcess runs a server in this process (so that -cpuprofile sees the relay) with an
// interface "echo" served by examples/echo.
func startInProcess(b testing.TB, workers int) string {
	b.Helper()
	dir, err := os.MkdirTemp("", "taskdb")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	addr := "unix:" + filepath.Join(dir, "taskd.sock")
	minIdle := workers
	cfg := config.Config{Listen: []string{addr}, Interfaces: map[string]config.Interface{
		"echo": {Command: []string{taskdtest.Binary(b, "examples/echo")}, MinIdle: &minIdle, MaxWorkers: workers},
	}}
	cfg.Normalize()
	srv, err := server.New(cfg, nil, "bench")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func() { close(ready) }) }()
	<-ready
	b.Cleanup(func() { cancel(); <-done })
	return addr
}

func benchHeld(b *testing.B, callers int, payload string) {
	addr := startInProcess(b, callers)
	c, err := client.New(client.Config{Addr: addr, Interface: "echo"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	b.SetParallelism(callers)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		co, err := c.Checkout(ctx)
		if err != nil {
			b.Error(err)
			return
		}
		defer co.Release()
		var out json.RawMessage
		for pb.Next() {
			if err := co.Call(ctx, "echo", &out, payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRelayHeldCheckout measures calls on held checkouts through an in-process taskd
// (client, daemon and relay in this process; the worker is a real examples/echo process).
func BenchmarkRelayHeldCheckout(b *testing.B) {
	small := strings.Repeat("x", 50)
	b.Run("callers=1/50B", func(b *testing.B) { benchHeld(b, 1, small) })
	b.Run("callers=8/50B", func(b *testing.B) { benchHeld(b, 4, small) }) // SetParallelism multiplies GOMAXPROCS (2)
}
