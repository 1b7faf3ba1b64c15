package client

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/taskd-dev/taskd/internal/wire"
)

// callFake is a minimal taskd for BenchmarkCall on a unix socket: it grants every checkout
// and answers every call with "ok" and the call's own arguments. It finds co, id and the
// arguments by scanning the line the client wrote (falling back to a full decode if the
// line does not look as expected), so that the allocations the benchmark reports are
// nearly all the client's.
type callFake struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startCallFake(b *testing.B) string {
	path := sockPath(b)
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	f := &callFake{ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, nc)
			f.mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.serve(nc)
			}()
		}
	}()
	b.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, nc := range f.conns {
			nc.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return "unix:" + path
}

func (f *callFake) serve(nc net.Conn) {
	defer nc.Close()
	lr := wire.NewLineReader(nc, 0)
	var out []byte
	var nextCo uint64
	for {
		line, err := lr.ReadLine()
		if err != nil {
			return
		}
		out = out[:0]
		if co, id, args, ok := scanCall(line); ok {
			out = append(out, `{"t":"ok","co":`...)
			out = append(out, co...)
			out = append(out, `,"id":`...)
			out = append(out, id...)
			out = append(out, `,"r":`...)
			out = append(out, args...)
			out = append(out, "}\n"...)
		} else {
			m, err := wire.DecodeClientMsg(line)
			if err != nil {
				return
			}
			var r wire.ClientMsg
			switch m.T {
			case wire.TCheckout:
				nextCo++
				r = wire.ClientMsg{T: wire.TGranted, ID: m.ID, Co: nextCo, Worker: "echo-1", PID: 1001, N: 1}
				if m.Once { // one-shot: answered, addressed to the request, never granted
					r = wire.ClientMsg{T: wire.TOK, ID: m.ID, R: m.A, Worker: "echo-1", PID: 1001}
				}
			case wire.TCall:
				r = wire.ClientMsg{T: wire.TOK, Co: m.Co, ID: m.ID, R: m.A}
			case wire.TPing:
				r = wire.ClientMsg{T: wire.TPong, ID: m.ID, Version: "bench"}
			default: // release and the rest need no answer here
				continue
			}
			if out, err = wire.AppendClientMsg(out, &r); err != nil {
				return
			}
		}
		if _, err := nc.Write(out); err != nil {
			return
		}
	}
}

// scanCall picks co, id and the arguments out of {"t":"call","co":CO,"id":ID,...,"a":ARGS}.
func scanCall(line []byte) (co, id, args []byte, ok bool) {
	digits := func(b []byte) ([]byte, []byte) {
		i := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return b[:i], b[i:]
	}
	rest, ok := bytes.CutPrefix(line, []byte(`{"t":"call","co":`))
	if !ok {
		return nil, nil, nil, false
	}
	co, rest = digits(rest)
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"id":`)); !ok {
		return nil, nil, nil, false
	}
	id, rest = digits(rest)
	i := bytes.Index(rest, []byte(`,"a":`))
	if len(co) == 0 || len(id) == 0 || i < 0 || !bytes.HasSuffix(rest, []byte("}")) {
		return nil, nil, nil, false
	}
	return co, id, rest[i+len(`,"a":`) : len(rest)-1], true
}

// BenchmarkCall measures calls through the client on a fake connection: the client's cost
// (encode, write, reader dispatch, decode of the result into a json.RawMessage) plus one
// round trip over a unix socket to a fake daemon that does almost nothing.
func BenchmarkCall(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"50B", 50}, {"4KiB", 4096}} {
		payload := strings.Repeat("x", size.n)
		b.Run("held/"+size.name, func(b *testing.B) {
			c := benchClient(b)
			co, err := c.Checkout(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			defer co.Release()
			ctx := context.Background()
			var res json.RawMessage
			b.ReportAllocs()
			for b.Loop() {
				if err := co.Call(ctx, "echo", &res, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("oneshot/"+size.name, func(b *testing.B) {
			c := benchClient(b)
			ctx := context.Background()
			var res json.RawMessage
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Call(ctx, "echo", &res, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("pipelined-32/50B", func(b *testing.B) {
		c := benchClient(b)
		co, err := c.Checkout(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		defer co.Release()
		ctx := context.Background()
		payload := strings.Repeat("x", 50)
		var res json.RawMessage
		pend := make([]*Pending, 0, 32)
		b.ReportAllocs()
		b.ResetTimer()
		for done := 0; done < b.N; done += len(pend) {
			pend = pend[:0]
			for range min(32, b.N-done) {
				pend = append(pend, co.Go("echo", payload))
			}
			for _, p := range pend {
				if err := p.Wait(ctx, &res); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

func benchClient(b *testing.B) *Client {
	b.Helper()
	c, err := New(Config{Addr: startCallFake(b), Interface: "echo"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}
