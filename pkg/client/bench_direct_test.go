package client

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"testing"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/internal/wire"
)

// BenchmarkDirectLease compares a held checkout's call relayed by taskd with the same call
// over a direct lease, side by side in one run, against the real taskd and the minimal
// lease-speaking worker (one caller, a 50-byte echo), and with the floor: that worker
// driven directly over its stdin and stdout, with no taskd.
func BenchmarkDirectLease(b *testing.B) {
	d, _ := leaseDaemon(b, "")
	arg := "taskd-benchtaskd-benchtaskd-benchtaskd-benchtaskd-"
	b.Run("pipe", func(b *testing.B) {
		cmd := exec.Command(taskdtest.Binary(b, "internal/taskdtest/leaseworker"))
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { in.Close(); _ = cmd.Wait() }()
		br := bufio.NewReader(out)
		if _, err := br.ReadBytes('\n'); err != nil { // ready
			b.Fatal(err)
		}
		a, _ := json.Marshal([]string{arg})
		var line []byte
		var id uint64
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			id++
			line = wire.AppendCall(line[:0], 0, id, 0, "echo", a)
			if _, err := in.Write(line); err != nil {
				b.Fatal(err)
			}
			if _, err := br.ReadSlice('\n'); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, m := range []struct {
		name string
		mode DirectMode
	}{{"relay", DirectOff}, {"direct", DirectAuto}} {
		b.Run(m.name, func(b *testing.B) {
			c, err := New(Config{Addr: d.Addr, Interface: "lease", Direct: m.mode})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			co, err := c.Checkout(ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer co.Release()
			if (co.pair != nil) != (m.mode == DirectAuto) {
				b.Fatalf("direct lease: %v", co.pair != nil)
			}
			var r json.RawMessage
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := co.Call(ctx, "echo", &r, arg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("oneshot", func(b *testing.B) { // Client.Call: relayed (no warm leases)
		c, err := New(Config{Addr: d.Addr, Interface: "lease"})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		var r json.RawMessage
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Call(context.Background(), "echo", &r, arg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
