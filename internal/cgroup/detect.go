package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Controllers are the cgroup v2 controllers taskd enables for its workers, when its
// cgroup has them: memory (memory.max), pids (pids.max) and cpu (cpu.weight).
var Controllers = []string{"cpu", "memory", "pids"}

// Found is where taskd's own cgroup is, as Detect found it.
type Found struct {
	Mount string // the cgroup2 mount point, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified
	Path  string // taskd's cgroup, relative to the hierarchy's root, e.g. /system.slice/taskd.service
	// Dir is the directory of the delegated cgroup that taskd lays out its tree in: taskd's
	// own cgroup, or its parent when taskd already runs in its supervisor leaf.
	Dir string
	// Available are the controllers of Controllers that Dir offers (cgroup.controllers).
	Available []string
}

// OffError says why taskd runs without cgroups. Its message is meant for the log line
// that says so, once, at start.
type OffError struct{ Reason string }

func (e *OffError) Error() string { return "cgroup limits are off: " + e.Reason }

func off(format string, args ...any) *OffError {
	return &OffError{Reason: fmt.Sprintf(format, args...)}
}

// Detect finds the calling process's cgroup v2 and whether it is delegated to it: a
// cgroup of its own (not the root, and no other process in it or its supervisor leaf),
// writable (its directory, cgroup.procs and cgroup.subtree_control), and, if it is a
// systemd unit's (*.service, *.scope), one that systemd delegated (Delegate=yes: systemd
// marks it with the trusted.delegate or user.delegate extended attribute, or made it the
// unprivileged service user's). It returns an *OffError saying why not otherwise.
func Detect() (*Found, error) {
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, off("reading /proc/self/mountinfo: %v", err)
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, off("reading /proc/self/cgroup: %v", err)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		if rel := unix.ByteSliceToString(uts.Release[:]); !KernelAtLeast(rel, 5, 7) {
			return nil, off("Linux %s is older than 5.7, which starting a process into a cgroup (CLONE_INTO_CGROUP) needs", rel)
		}
	}
	return detect(mountinfo, self, os.Geteuid(), os.Getpid())
}

// KernelAtLeast reports whether a kernel release such as "6.1.0-13-amd64" is at least
// major.minor; a release it cannot read counts as new enough.
func KernelAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return true
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return true
	}
	return ma > major || (ma == major && mi >= minor)
}

func detect(mountinfo, self []byte, euid, pid int) (*Found, error) {
	mount, root, ok := ParseMountinfo(mountinfo)
	if !ok {
		return nil, off("no cgroup2 filesystem is mounted (cgroup v1 only); cgroup limits need the unified hierarchy (cgroup v2)")
	}
	own, ok := ParseSelfCgroup(self)
	if !ok {
		return nil, off("/proc/self/cgroup has no cgroup v2 entry (0::/...)")
	}
	rel, ok := strings.CutPrefix(own, root)
	if !ok || (root != "/" && rel != "" && rel[0] != '/') {
		return nil, off("taskd's cgroup %s is not under the cgroup2 mount %s (whose root is %s)", own, mount, root)
	}
	f := &Found{Mount: mount, Path: own, Dir: filepath.Join(mount, rel)}
	if path.Base(own) == supervisor {
		f.Dir = filepath.Dir(f.Dir) // a taskd before this one (or systemd's DelegateSubgroup=) put it there
	}
	// The hierarchy's real root has no cgroup.type; the root of a cgroup namespace (a
	// container's own cgroup) has one, and may well be delegated.
	if _, err := os.Stat(filepath.Join(f.Dir, "cgroup.type")); filepath.Clean(f.Dir) == filepath.Clean(mount) && err != nil {
		return nil, off("taskd runs in the root cgroup of %s: it has no cgroup delegated to it (run it under systemd with Delegate=yes)", mount)
	}
	for _, name := range []string{"", "cgroup.procs", "cgroup.subtree_control"} {
		p := filepath.Join(f.Dir, name)
		if err := unix.Access(p, unix.W_OK); err != nil {
			why := err.Error()
			if errors.Is(err, unix.EROFS) {
				why += " (the cgroup filesystem is read-only here: systemd's ProtectControlGroups=yes does that)"
			}
			return nil, off("taskd's cgroup %s is not delegated to it: %s is not writable: %s (set Delegate=yes in the systemd unit)", f.Dir, p, why)
		}
	}
	if unit := path.Base(strings.TrimSuffix(f.Dir, "/")); (strings.HasSuffix(unit, ".service") || strings.HasSuffix(unit, ".scope")) &&
		euid == 0 && !delegated(f.Dir) {
		return nil, off("taskd's cgroup %s belongs to systemd, which did not delegate it (set Delegate=yes in the unit; "+
			"systemd 251 or later marks a delegated cgroup with the trusted.delegate attribute)", f.Dir)
	}
	// A delegated cgroup is taskd's alone: it purges workers/ at start. Processes beside it
	// (a shell's session scope, a test runner, a taskd started before it) mean it is not.
	for _, d := range []string{f.Dir, filepath.Join(f.Dir, supervisor)} {
		raw, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue // no supervisor/ yet
		}
		for _, p := range ParseProcs(raw) {
			if p != pid {
				return nil, off("taskd's cgroup %s is not its own: process %d is in %s too (another taskd, or the "+
					"session taskd was started from); give taskd a cgroup of its own (systemd: Delegate=yes)", f.Dir, p, d)
			}
		}
	}
	have, err := os.ReadFile(filepath.Join(f.Dir, "cgroup.controllers"))
	if err != nil {
		return nil, off("reading %s/cgroup.controllers: %v", f.Dir, err)
	}
	avail := strings.Fields(string(have))
	for _, c := range Controllers {
		for _, a := range avail {
			if a == c {
				f.Available = append(f.Available, c)
			}
		}
	}
	return f, nil
}

// delegated reports whether systemd marked dir as delegated (systemd 251 and later).
func delegated(dir string) bool {
	for _, attr := range []string{"trusted.delegate", "user.delegate"} {
		buf := make([]byte, 8)
		n, err := unix.Getxattr(dir, attr, buf)
		if err == nil && string(buf[:n]) == "1" {
			return true
		}
	}
	return false
}

// ParseMountinfo returns the mount point and root of the first cgroup2 filesystem in a
// /proc/PID/mountinfo, with its octal escapes (\040 for a space) undone.
func ParseMountinfo(b []byte) (mount, root string, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// 40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
		line := sc.Text()
		pre, post, found := strings.Cut(line, " - ")
		if !found {
			continue
		}
		if fs := strings.Fields(post); len(fs) == 0 || fs[0] != "cgroup2" {
			continue
		}
		fields := strings.Fields(pre)
		if len(fields) < 5 {
			continue
		}
		root, rok := unescape(fields[3])
		mount, mok := unescape(fields[4])
		if !rok || !mok || !strings.HasPrefix(root, "/") || !strings.HasPrefix(mount, "/") {
			continue
		}
		return mount, root, true
	}
	return "", "", false
}

// unescape undoes mountinfo's octal escapes (\040 space, \011 tab, \012 newline, \134
// backslash).
func unescape(s string) (string, bool) {
	if !strings.Contains(s, `\`) {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", false
		}
		n, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", false
		}
		b.WriteByte(byte(n))
		i += 3
	}
	return b.String(), true
}

// ParseSelfCgroup returns the cgroup v2 path of a /proc/PID/cgroup (its "0::/path" line).
func ParseSelfCgroup(b []byte) (string, bool) {
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok && strings.HasPrefix(p, "/") {
			return strings.TrimSuffix(p, " (deleted)"), true
		}
	}
	return "", false
}
