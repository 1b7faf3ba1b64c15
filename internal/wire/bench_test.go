package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
)

// Benchmarks of the hot paths of both protocols, on an echo of a 50-byte string and of a
// 4 KiB string: the shapes `make bench` relays.

var benchSizes = []struct {
	name string
	n    int
}{{"50B", 50}, {"4KiB", 4096}}

// benchArgs returns the JSON array ["xxx…"] with an n-byte string.
func benchArgs(n int) json.RawMessage {
	return json.RawMessage(`["` + strings.Repeat("x", n) + `"]`)
}

func BenchmarkDecodeWorkerMsg(b *testing.B) {
	for _, sz := range benchSizes {
		args := benchArgs(sz.n)
		for _, tc := range []struct {
			name string
			line []byte
		}{
			{"call", bytes.TrimSuffix(AppendCall(nil, 0, 12345, 0, "echo", args), []byte("\n"))},
			{"ok", []byte(`{"t":"ok","id":12345,"r":` + string(args) + `}`)},
		} {
			b.Run(tc.name+"/"+sz.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(tc.line)))
				for b.Loop() {
					if _, err := DecodeWorkerMsg(tc.line); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkDecodeClientMsg(b *testing.B) {
	for _, sz := range benchSizes {
		args := benchArgs(sz.n)
		for _, tc := range []struct {
			name string
			msg  ClientMsg
		}{
			{"call", ClientMsg{T: TCall, Co: 7, ID: 12345, M: "echo", A: args}},
			{"ok", ClientMsg{T: TOK, Co: 7, ID: 12345, R: args}},
		} {
			line, err := AppendClientMsg(nil, &tc.msg)
			if err != nil {
				b.Fatal(err)
			}
			line = bytes.TrimSuffix(line, []byte("\n"))
			b.Run(tc.name+"/"+sz.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(line)))
				for b.Loop() {
					if _, err := DecodeClientMsg(line); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkAppendCall(b *testing.B) {
	for _, sz := range benchSizes {
		args := benchArgs(sz.n)
		b.Run(sz.name, func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			var id uint64
			for b.Loop() {
				id++
				buf = AppendCall(buf[:0], 0, id, 0, "echo", args)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

func BenchmarkAppendClientMsg(b *testing.B) {
	for _, sz := range benchSizes {
		args := benchArgs(sz.n)
		b.Run("ok/"+sz.name, func(b *testing.B) {
			b.ReportAllocs()
			m := ClientMsg{T: TOK, Co: 7, R: args}
			var buf []byte
			var err error
			for b.Loop() {
				m.ID++
				if buf, err = AppendClientMsg(buf[:0], &m); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

// BenchmarkLineReader reads many lines of one size from memory, in a steady state (the
// reader's buffer already grown).
func BenchmarkLineReader(b *testing.B) {
	for _, sz := range benchSizes {
		line := AppendCall(nil, 0, 12345, 0, "echo", benchArgs(sz.n))
		const perChunk = 256
		chunk := bytes.Repeat(line, perChunk)
		b.Run(sz.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(line)))
			src := &repeatReader{chunk: chunk}
			lr := NewLineReader(src, 0)
			for b.Loop() {
				got, err := lr.ReadLine()
				if err != nil {
					b.Fatal(err)
				}
				if len(got) != len(line)-1 {
					b.Fatal(fmt.Errorf("read %d bytes, want %d", len(got), len(line)-1))
				}
			}
		})
	}
}

// repeatReader returns chunk over and over, in reads of at most 64 KiB (like a pipe).
type repeatReader struct {
	chunk []byte
	off   int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if len(p) > 64<<10 {
		p = p[:64<<10]
	}
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.chunk[r.off:])
		n += c
		r.off = (r.off + c) % len(r.chunk)
	}
	return n, nil
}

var _ io.Reader = (*repeatReader)(nil)
