package client

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// appendArgs must encode what json.Marshal encodes, value for value.
func TestAppendArgsMatchesEncodingJSON(t *testing.T) {
	type point struct{ X, Y int }
	cases := [][]any{
		nil,
		{},
		{"plain"},
		{"", "quote \" backslash \\ nl \n cr \r tab \t ctl \x01 \x1f del \x7f"},
		{"<html> & </html>", "\u2028\u2029", "日本語 ✓", "bad utf-8 \xff\xfe end"},
		{true, false, nil, 0, -1, math.MaxInt64, int64(math.MinInt64)},
		{3.5, uint8(7), []string{"a"}, map[string]int{"k": 1}, point{1, 2}},
		{json.RawMessage(`{"a": [1, 2]}`), json.RawMessage("[\n1\n]")},
		{strings.Repeat("0123456789abcdef", 256)},
	}
	for _, args := range cases {
		want, err := json.Marshal(args)
		if args == nil {
			want = []byte("[]")
		}
		require.NoError(t, err)
		got, err := appendArgs([]byte("prefix"), args)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(string(got), "prefix"))
		got = got[len("prefix"):]
		require.True(t, json.Valid(got), "%s", got)
		var w, g any
		require.NoError(t, json.Unmarshal(want, &w))
		require.NoError(t, json.Unmarshal(got, &g))
		assert.Equal(t, w, g, "args %#v: got %s, encoding/json %s", args, got, want)
	}
	_, err := appendArgs(nil, []any{make(chan int)})
	require.Error(t, err, "a value encoding/json cannot encode fails as with json.Marshal")
	_, err = appendArgs(nil, []any{json.RawMessage(`{bad`)})
	require.Error(t, err)
}

// BenchmarkEncodeArgs compares appendArgs into a reused buffer with json.Marshal, the plain
// way, for the argument of a 4 KiB call.
func BenchmarkEncodeArgs(b *testing.B) {
	args := []any{strings.Repeat("0123456789abcdef", 256)}
	b.Run("appendArgs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			bp := getBuf()
			a, err := appendArgs(*bp, args)
			if err != nil {
				b.Fatal(err)
			}
			putBuf(bp, a)
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(args); err != nil {
				b.Fatal(err)
			}
		}
	})
}
