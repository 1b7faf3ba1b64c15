package worker

import (
	"bytes"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// statDyingRef is the straightforward reading of a stat line that statDying must agree
// with (statDying does the same without allocating).
func statDyingRef(b []byte) bool {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 29 {
		return false
	}
	flags, _ := strconv.ParseUint(f[6], 10, 64)
	pending, _ := strconv.ParseUint(f[28], 10, 64)
	return strings.ContainsAny(f[0][:1], "ZXx") || flags&0x4 != 0 || pending&(1<<(syscall.SIGKILL-1)) != 0
}

// A stat line of a sleeping process; %s are replaced by the state, flags and pending set.
const statLine = "4242 (echo-worker) %s 1 4242 4242 0 -1 %s 128 0 0 0 0 0 0 0 20 0 3 0 " +
	"123456 1234567 890 18446744073709551615 1 1 0 0 0 %s 0 0 0 0 0 17 1 0 0 0 0 0\n"

func stat(state, flags, pending string) []byte {
	return []byte(strings.NewReplacer("%s", "").Replace(strings.Replace(strings.Replace(strings.Replace(
		statLine, "%s", state, 1), "%s", flags, 1), "%s", pending, 1)))
}

func TestStatDying(t *testing.T) {
	cases := []struct {
		name string
		line []byte
		want bool
	}{
		{"sleeping", stat("S", "4194560", "0"), false},
		{"zombie", stat("Z", "4194560", "0"), true},
		{"dead", stat("X", "4194560", "0"), true},
		{"exiting", stat("S", "4194564", "0"), true},
		{"SIGKILL pending", stat("S", "4194560", "256"), true},
		{"SIGTERM pending only", stat("S", "4194560", "16384"), false},
		{"odd command", []byte(strings.Replace(string(stat("R", "0", "256")), "(echo-worker)", "(a) Z (b)", 1)), true},
		{"truncated", []byte("4242 (echo) S 1 2 3"), false},
		{"garbage", []byte("no parenthesis"), false},
	}
	for _, c := range cases {
		if got := statDying(c.line); got != c.want {
			t.Errorf("%s: statDying = %v, want %v (line %q)", c.name, got, c.want, c.line)
		}
		if ref := statDyingRef(c.line); ref != c.want {
			t.Errorf("%s: reference = %v, want %v", c.name, ref, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { statDying(cases[0].line) }); n != 0 {
		t.Errorf("statDying allocates %v times", n)
	}
}

// FuzzStatDying checks statDying against the plain reading of the line.
func FuzzStatDying(f *testing.F) {
	f.Add(stat("S", "4194560", "0"))
	f.Add(stat("S", "4194560", "256"))
	f.Add(stat("Z", "4", "x"))
	f.Add([]byte("1 (a b) R 1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The reference splits fields on any Unicode space; the kernel separates them with
		// one ASCII space.
		for _, c := range b {
			if c == '\t' || c == '\v' || c == '\f' || c == '\r' || c >= 0x80 {
				return
			}
		}
		if got, want := statDying(b), statDyingRef(b); got != want {
			t.Fatalf("statDying(%q) = %v, reference %v", b, got, want)
		}
	})
}
