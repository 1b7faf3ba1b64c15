package cgroup

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// emptyWait bounds how long a kill waits for the cgroup's processes to be gone.
const emptyWait = 5 * time.Second

// RemoveTree kills every process in the cgroup dir and in its descendants, waits until
// they are gone, and removes the cgroups, deepest first. A dir that does not exist is not
// an error.
func RemoveTree(dir string) error { return remove(dir) }

// remove is RemoveTree.
func remove(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	if err := kill(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			errs = append(errs, remove(filepath.Join(dir, e.Name())))
		}
	}
	if err := waitEmpty(dir, emptyWait); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, rmdir(dir))
	return errors.Join(errs...)
}

// kill kills every process in the cgroup dir and its descendants: with cgroup.kill
// (Linux 5.14 and later), which the kernel applies to every process, those forked
// meanwhile included, or else with killEach.
func kill(dir string) error {
	err := write(dir, "cgroup.kill", "1")
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(dir); serr == nil {
			return killEach(dir)
		}
	}
	return err
}

// killEach is kill for kernels without cgroup.kill: it freezes the cgroup where it can
// (cgroup.freeze, Linux 5.2), so that nothing forks while it works, and sends SIGKILL to
// each process in cgroup.procs until none is left (a frozen process still dies of
// SIGKILL). It does not reach descendant cgroups: remove walks them.
func killEach(dir string) error {
	frozen := write(dir, "cgroup.freeze", "1") == nil
	if frozen {
		defer write(dir, "cgroup.freeze", "0") //nolint:errcheck // gone with the cgroup, or nothing left to thaw
	}
	deadline := time.Now().Add(emptyWait)
	for {
		raw, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			return err
		}
		pids := ParseProcs(raw)
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: processes %v still there after SIGKILL", dir, pids)
		}
		_ = waitEmpty(dir, 10*time.Millisecond)
	}
}

// ParseProcs returns the pids listed in a cgroup.procs, one a line; it skips what is not a
// positive number.
func ParseProcs(b []byte) []int {
	var pids []int
	for f := range strings.FieldsSeq(string(b)) {
		if n, err := strconv.Atoi(f); err == nil && n > 0 {
			pids = append(pids, n)
		}
	}
	return pids
}

// ParseEvents returns the populated flag of a cgroup.events ("populated 1\nfrozen 0\n"):
// whether the cgroup or a descendant has a live process. ok is false if the flag is missing.
func ParseEvents(b []byte) (populated, ok bool) {
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, found := strings.CutPrefix(line, "populated "); found {
			switch strings.TrimSpace(v) {
			case "0":
				return false, true
			case "1":
				return true, true
			}
			return false, false
		}
	}
	return false, false
}

// waitEmpty waits until no live process is left in the cgroup dir or its descendants, for
// at most timeout: the kernel signals every change of cgroup.events to poll(2) as
// POLLPRI, so this does not spin.
func waitEmpty(dir string, timeout time.Duration) error {
	f, err := os.Open(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return err
	}
	defer f.Close()
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 256)
	for {
		n, err := f.ReadAt(buf, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if populated, ok := ParseEvents(buf[:n]); ok && !populated {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("%s: processes still running %s after they were killed", dir, timeout)
		}
		fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLPRI}}
		if _, err := unix.Poll(fds, int(min(left, 100*time.Millisecond)/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// rmdir removes the empty cgroup dir, retrying a moment while the kernel still counts a
// process that has just exited (EBUSY).
func rmdir(dir string) error {
	deadline := time.Now().Add(time.Second)
	for {
		err := unix.Rmdir(dir)
		switch {
		case err == nil || errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EBUSY) && time.Now().Before(deadline):
			_ = waitEmpty(dir, 10*time.Millisecond)
			continue
		}
		return fmt.Errorf("removing cgroup %s: %w", dir, err)
	}
}

// write writes value to the cgroup file dir/name, as one write(2): the kernel's answer
// (EBUSY, EINVAL, ...) is the error.
func write(dir, name, value string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(value))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %q to %s: %w", value, filepath.Join(dir, name), err)
	}
	return nil
}
