package procfs

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// parseStatRef is the straightforward reading of a stat line that ParseStat must agree
// with (ParseStat does the same without allocating).
func parseStatRef(b []byte) (Stat, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 29 {
		return Stat{}, false
	}
	ok := true
	num := func(s string) uint64 {
		n, err := strconv.ParseUint(s, 10, 64)
		ok = ok && err == nil
		return n
	}
	s := Stat{State: f[0][0], Flags: num(f[6]), Utime: num(f[11]), Stime: num(f[12]), Signal: num(f[28])}
	if !ok {
		return Stat{}, false
	}
	return s, true
}

// statLine returns the stat line of a sleeping process with the given state, flags and
// pending signals.
func statLine(state, flags, pending string) []byte {
	return []byte("4242 (echo-worker) " + state + " 1 4242 4242 0 -1 " + flags + " 128 0 0 0 17 5 " +
		"0 0 20 0 3 0 123456 1234567 890 18446744073709551615 1 1 0 0 0 " + pending +
		" 0 0 0 0 0 17 1 0 0 0 0 0\n")
}

func TestParseStat(t *testing.T) {
	cases := []struct {
		name   string
		line   []byte
		ok     bool
		dying  bool
		signal uint64
	}{
		{"sleeping", statLine("S", "4194560", "0"), true, false, 0},
		{"zombie", statLine("Z", "4194560", "0"), true, true, 0},
		{"dead", statLine("X", "4194560", "0"), true, true, 0},
		{"exiting", statLine("S", "4194564", "0"), true, true, 0},
		{"SIGKILL pending", statLine("S", "4194560", "256"), true, true, 256},
		{"SIGTERM pending only", statLine("S", "4194560", "16384"), true, false, 16384},
		{"odd command", bytes.Replace(statLine("R", "0", "256"), []byte("(echo-worker)"), []byte("(a) Z (b)"), 1), true, true, 256},
		{"flags not a number", statLine("Z", "x", "0"), false, false, 0},
		{"overflow", statLine("S", "0", "18446744073709551616"), false, false, 0},
		{"truncated", []byte("4242 (echo) S 1 2 3"), false, false, 0},
		{"garbage", []byte("no parenthesis"), false, false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, ok := ParseStat(c.line)
			if ok != c.ok || s.Dying() != c.dying || s.Signal != c.signal {
				t.Errorf("ParseStat = %+v, %v (dying %v); want ok %v, dying %v, signal %d (line %q)",
					s, ok, s.Dying(), c.ok, c.dying, c.signal, c.line)
			}
			if ok {
				if s.Utime != 17 || s.Stime != 5 {
					t.Errorf("utime %d, stime %d; want 17, 5", s.Utime, s.Stime)
				}
			}
			if ref, refOK := parseStatRef(c.line); ref != s || refOK != ok {
				t.Errorf("reference = %+v, %v; ParseStat = %+v, %v", ref, refOK, s, ok)
			}
		})
	}
	if n := testing.AllocsPerRun(100, func() { ParseStat(cases[0].line) }); n != 0 {
		t.Errorf("ParseStat allocates %v times", n)
	}
}

// FuzzParseStat checks ParseStat against the plain reading of the line.
func FuzzParseStat(f *testing.F) {
	f.Add(statLine("S", "4194560", "0"))
	f.Add(statLine("S", "4194560", "256"))
	f.Add(statLine("Z", "4", "x"))
	f.Add([]byte("1 (a b) R 1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The reference splits fields on any Unicode space; the kernel separates them with
		// one ASCII space.
		for _, c := range b {
			if c == '\t' || c == '\v' || c == '\f' || c == '\r' || c >= 0x80 {
				return
			}
		}
		got, ok := ParseStat(b)
		want, wantOK := parseStatRef(b)
		if got != want || ok != wantOK {
			t.Fatalf("ParseStat(%q) = %+v, %v; reference %+v, %v", b, got, ok, want, wantOK)
		}
	})
}

func TestReadStat(t *testing.T) {
	s, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.State != 'R' && s.State != 'S' {
		t.Errorf("this process is in state %q", s.State)
	}
	if s.Dying() {
		t.Error("this process is dying")
	}
	if _, err := ReadStat(-1); err == nil {
		t.Error("no error for pid -1")
	}
}

func TestStatFile(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := false
	defer func() {
		if !reaped {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	f := NewStatFile(cmd.Process.Pid)
	defer f.Close()
	if f.Dying() {
		t.Fatal("a sleeping child is dying")
	}
	if n := testing.AllocsPerRun(100, func() { f.Dying() }); n != 0 {
		t.Errorf("StatFile.Dying allocates %v times", n)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// SIGKILL is pending before kill(2) returns, and PF_EXITING is set soon after the
	// process takes it off; between the two there is a window of a few instructions.
	for i := 0; !f.Dying(); i++ {
		if i == 1000 {
			t.Fatal("a child sent SIGKILL is not dying")
		}
		time.Sleep(100 * time.Microsecond)
	}
	cmd.Wait()
	reaped = true
	if !f.Dying() {
		t.Fatal("a reaped child is not dying")
	}
	f.Close()
	f.Close()
	if !f.Dying() {
		t.Fatal("a closed StatFile says the process is not dying")
	}
	if !NewStatFile(-1).Dying() {
		t.Fatal("a pid that does not exist is not dying")
	}
}

func TestRSSAndHost(t *testing.T) {
	rss, err := RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 {
		t.Errorf("RSS of this process is %d bytes", rss)
	}
	if _, err := RSS(-1); err == nil {
		t.Error("no error for pid -1")
	}
	if CPUModel() == "" || KernelRelease() == "?" {
		t.Errorf("CPU %q, kernel %q", CPUModel(), KernelRelease())
	}
}

func TestParseShdPnd(t *testing.T) {
	status := func(v string) []byte {
		return []byte("Name:\tw\nState:\tR (running)\nSigQ:\t1/63\nSigPnd:\t0000000000000000\nShdPnd:\t" + v + "\nSigBlk:\t0\n")
	}
	cases := []struct {
		in   []byte
		mask uint64
		ok   bool
	}{
		{status("0000000000000100"), 1 << (9 - 1), true}, // SIGKILL
		{status("0000000000000000"), 0, true},
		{status("FFFFFFFFFFFFFFFF"), ^uint64(0), true},
		{status("00000000000000000"), 0, false}, // 17 digits
		{status("00x0"), 0, false},
		{status(""), 0, false},
		{[]byte("ShdPnd:\t100"), 0x100, true}, // no final newline
		{[]byte("Name:\tw\n"), 0, false},
		{nil, 0, false},
	}
	for _, c := range cases {
		mask, ok := ParseShdPnd(c.in)
		if mask != c.mask || ok != c.ok {
			t.Errorf("ParseShdPnd(%q) = %#x, %v; want %#x, %v", c.in, mask, ok, c.mask, c.ok)
		}
	}
	self, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	if mask, ok := ParseShdPnd(self); !ok || mask&(1<<(9-1)) != 0 {
		t.Errorf("this process's status: ShdPnd %#x, %v", mask, ok)
	}
	if n := testing.AllocsPerRun(100, func() { ParseShdPnd(self) }); n != 0 {
		t.Errorf("ParseShdPnd allocates %v times", n)
	}
}

// TestKillPending: a live process has no SIGKILL pending; a pid with no process reads as
// gone (dying).
func TestKillPending(t *testing.T) {
	f := NewStatFile(os.Getpid())
	defer f.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.killPendingLocked() {
		t.Error("this process has SIGKILL pending")
	}
	gone := NewStatFile(1 << 30) // above pid_max
	defer gone.Close()
	if !gone.killPendingLocked() {
		t.Error("a process that does not exist is not dying")
	}
}

// FuzzParseShdPnd checks ParseShdPnd against strconv on the line it finds.
func FuzzParseShdPnd(f *testing.F) {
	f.Add([]byte("SigPnd:\t0\nShdPnd:\t0000000000000100\n"))
	f.Add([]byte("ShdPnd: ff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		mask, ok := ParseShdPnd(b)
		for _, line := range strings.Split(string(b), "\n") {
			v, found := strings.CutPrefix(line, "ShdPnd:")
			if !found {
				continue
			}
			v = strings.TrimLeft(v, " \t")
			want, err := strconv.ParseUint(v, 16, 64)
			wantOK := err == nil && len(v) <= 16 && !strings.HasPrefix(v, "+") && !strings.Contains(v, "_") && !strings.HasPrefix(strings.ToLower(v), "0x")
			if ok != wantOK || (ok && mask != want) {
				t.Fatalf("ParseShdPnd(%q) = %#x, %v; strconv: %#x, %v", b, mask, ok, want, wantOK)
			}
			return
		}
		if ok {
			t.Fatalf("ParseShdPnd(%q) = %#x, true without a ShdPnd line", b, mask)
		}
	})
}
