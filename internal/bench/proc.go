package bench

import (
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/taskd-dev/taskd/internal/procfs"
)

// What the suite measures of a process (CPU time, resident memory) and of the host; the
// reading of /proc is internal/procfs's.

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

// procCPU returns the user plus system CPU time that process pid (all its threads) has
// used so far, not counting its reaped children. hz is clockTicks().
func procCPU(pid int, hz int64) (time.Duration, error) {
	s, err := procfs.ReadStat(pid)
	if err != nil {
		return 0, err
	}
	return time.Duration(s.Utime+s.Stime) * time.Second / time.Duration(hz), nil
}

// procRSS returns the resident set size of pid in bytes.
func procRSS(pid int) (int64, error) { return procfs.RSS(pid) }

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
	return fmt.Sprintf("%d CPUs (nproc), %s, Linux %s, %s %s/%s", runtime.NumCPU(), procfs.CPUModel(),
		procfs.KernelRelease(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
