package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Linux /proc readers for the suite: CPU time, children and resident memory of a process.

// clockTicks returns the unit of utime and stime in /proc/PID/stat (USER_HZ): what
// `getconf CLK_TCK` prints, 100 on every Linux architecture Go supports if that fails.
func clockTicks() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 100
}

// procStat returns the fields of /proc/PID/stat after the command name: f[0] is field 3
// (state), f[11] and f[12] are fields 14 and 15 (utime, stime).
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// The command name (field 2) is in parentheses and may contain spaces: start after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// procCPU returns the user plus system CPU time that process pid (all its threads) has
// used so far, not counting its reaped children. hz is clockTicks().
func procCPU(pid int, hz int64) (time.Duration, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / time.Duration(hz), nil
}

// procRSS returns the resident set size of pid (VmRSS in /proc/PID/status) in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: VmRSS %q", pid, v)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// cpuMeter measures the CPU time a set of processes uses between Start and Stop. The set
// is fixed at Start; a process that is gone by Stop is left out of the total.
type cpuMeter struct {
	hz     int64
	pids   []int
	before map[int]time.Duration
	delta  time.Duration
}

func (m *cpuMeter) Start(pids []int) {
	m.pids = pids
	m.before = make(map[int]time.Duration, len(pids))
	for _, p := range pids {
		if t, err := procCPU(p, m.hz); err == nil {
			m.before[p] = t
		}
	}
}

func (m *cpuMeter) Stop() time.Duration {
	m.delta = 0
	for _, p := range m.pids {
		b, ok := m.before[p]
		if !ok {
			continue
		}
		if t, err := procCPU(p, m.hz); err == nil {
			m.delta += t - b
		}
	}
	return m.delta
}

// machine describes the host in one line: CPUs, CPU model, kernel, Go version.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d CPUs (nproc), %s, Linux %s, %s %s/%s", runtime.NumCPU(), model, kernel,
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
