package wire

import (
	"bufio"
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

// envelope is a message of either protocol decoded the plain way: encoding/json into a
// struct whose payloads stay raw. BenchmarkDecode measures the hand-written scanner behind
// DecodeWorkerMsg and DecodeClientMsg against it, so that the scanner keeps a measured
// reason to exist. When it was written (Go 1.26, two shared cores) the scanner was 7–10×
// faster and allocated nothing: a 50-byte call in 0.2 µs against 1.7 µs and 10
// allocations, a 4 KiB reply in 2.5 µs against 25 µs and 5.3 KB. Should the two come
// close, the plain way wins: replace the scanner.
type envelope struct {
	T        string          `json:"t"`
	V        int             `json:"v"`
	ID       uint64          `json:"id"`
	Co       uint64          `json:"co"`
	Ep       *uint64         `json:"ep"`
	M        string          `json:"m"`
	A        json.RawMessage `json:"a"`
	R        json.RawMessage `json:"r"`
	E        json.RawMessage `json:"e"`
	Logs     json.RawMessage `json:"logs"`
	Msg      string          `json:"msg"`
	Pipeline bool            `json:"pipeline"`
}

// BenchmarkDecode decodes the lines that `make bench` relays — a call and its ok reply,
// with a 50-byte and a 4 KiB string, as taskd reads them from a worker and from a client —
// with the scanner and with encoding/json (into envelope).
func BenchmarkDecode(b *testing.B) {
	for _, sz := range benchSizes {
		args := benchArgs(sz.n)
		for _, tc := range []struct {
			name   string
			line   []byte
			decode func([]byte) error
		}{
			{"worker-call", AppendCall(nil, 0, 12345, 0, "echo", args), decodeWorker},
			{"worker-ok", AppendOK(nil, 0, 12345, args, nil), decodeWorker},
			{"client-call", AppendCall(nil, 7, 12345, 0, "echo", args), decodeClient},
			{"client-ok", AppendOK(nil, 7, 12345, args, nil), decodeClient},
		} {
			line := bytes.TrimSuffix(tc.line, []byte("\n"))
			b.Run(tc.name+"/"+sz.name+"/scanner", func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(line)))
				for b.Loop() {
					if err := tc.decode(line); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(tc.name+"/"+sz.name+"/encoding-json", func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(line)))
				for b.Loop() {
					var m envelope
					if err := json.Unmarshal(line, &m); err != nil {
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
// reader's buffer already grown), with LineReader and with the plain way it replaced,
// bufio.Reader's ReadSlice. When LineReader was written (Go 1.26, two shared cores) the
// two were equally fast (11 ns for a 50-byte line, 130 ns for 4 KiB): LineReader exists
// for what bufio cannot do (refuse a line the moment it passes the limit, however full
// the buffer; take a long line's memory from a Budget), not for speed.
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
		b.Run(sz.name+"/bufio", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(line)))
			br := bufio.NewReaderSize(&repeatReader{chunk: chunk}, ReadBufferSize)
			for b.Loop() {
				got, err := br.ReadSlice('\n')
				if err != nil {
					b.Fatal(err)
				}
				if len(got) != len(line) {
					b.Fatal(fmt.Errorf("read %d bytes, want %d", len(got), len(line)))
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
