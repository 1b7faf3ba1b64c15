package procfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Children returns the pids of the direct children of pid (none if pid is gone).
func Children(pid int) []int {
	var out []int
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// Alive reports whether process pid exists and has not exited. A multi-threaded process
// whose leader is already a zombie still counts as alive until its last thread is gone:
// only then does the kernel report its exit to wait.
func Alive(pid int) bool {
	b, err := os.ReadFile(statPath(pid))
	if err != nil {
		return false
	}
	if s, ok := ParseStat(b); !ok || s.State != 'Z' {
		return true // a line this package cannot read does not make a process dead
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return err == nil && len(tasks) > 1
}

// OpenFDs returns the number of open file descriptors of process pid (/proc/PID/fd).
func OpenFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// RSS returns the resident set size of process pid (VmRSS in /proc/PID/status) in bytes.
func RSS(pid int) (int64, error) { return statusBytes(pid, "VmRSS") }

// PeakRSS returns the largest resident set size that process pid has had since it started
// (VmHWM in /proc/PID/status, the "high water mark") in bytes.
func PeakRSS(pid int) (int64, error) { return statusBytes(pid, "VmHWM") }

// statusBytes returns a size field (in kB) of /proc/PID/status, in bytes.
func statusBytes(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: %s %q is not a number of kB", pid, field, v)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s line (a kernel thread, or not Linux?)", pid, field)
}

// CPUModel returns the host's CPU model name from /proc/cpuinfo, or "unknown CPU".
func CPUModel() string {
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown CPU"
}

// KernelRelease returns the running kernel's release (/proc/sys/kernel/osrelease), or "?".
func KernelRelease() string {
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		return strings.TrimSpace(string(b))
	}
	return "?"
}
