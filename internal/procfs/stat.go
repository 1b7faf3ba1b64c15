package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Stat is what taskd reads of a /proc/PID/stat line. Field numbers are those of proc(5).
type Stat struct {
	State  byte   // field 3: 'R' running, 'S' sleeping, 'D' disk sleep, 'Z' zombie, 'X' dead, ...
	Flags  uint64 // field 9: the kernel's PF_* flags of the task
	Utime  uint64 // field 14: CPU time in user mode, in clock ticks (getconf CLK_TCK)
	Stime  uint64 // field 15: CPU time in kernel mode, in clock ticks
	Signal uint64 // field 31: the bitmap of pending signals (bit n-1 for signal n)
}

// Positions of the fields of Stat among those after the command name (field 2): the
// state, field 3, is at 0.
const (
	fState  = 3 - 3
	fFlags  = 9 - 3
	fUtime  = 14 - 3
	fStime  = 15 - 3
	fSignal = 31 - 3
)

// ParseStat parses a /proc/PID/stat line. ok is false if b is not one: no command name
// in parentheses, fewer than 31 fields, or one of Stat's numbers not a decimal number
// that fits in a uint64. It does not allocate.
//
// The command name (field 2) may contain anything, spaces and ")" included: the fields
// that follow it start after the last ")".
func ParseStat(b []byte) (s Stat, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, false
	}
	field := -1
	for j := i + 1; j < len(b) && field < fSignal; {
		for j < len(b) && (b[j] == ' ' || b[j] == '\n') {
			j++
		}
		if j == len(b) {
			break
		}
		field++
		k := j
		for k < len(b) && b[k] != ' ' && b[k] != '\n' {
			k++
		}
		num := true
		switch field {
		case fState:
			s.State = b[j]
		case fFlags:
			s.Flags, num = parseUint(b[j:k])
		case fUtime:
			s.Utime, num = parseUint(b[j:k])
		case fStime:
			s.Stime, num = parseUint(b[j:k])
		case fSignal:
			s.Signal, num = parseUint(b[j:k])
		}
		if !num {
			return Stat{}, false
		}
		j = k
	}
	if field < fSignal {
		return Stat{}, false
	}
	return s, true
}

// parseUint reads a decimal number as strconv.ParseUint(string(b), 10, 64) does, without
// allocating: ok is false if b is empty, holds anything but digits, or overflows.
func parseUint(b []byte) (n uint64, ok bool) {
	if len(b) == 0 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// pfExiting is the kernel's PF_EXITING task flag: the task is in exit().
const pfExiting = 0x4

// Dying reports whether the process has exited or is on its way: it is a zombie or dead,
// it is exiting (PF_EXITING), or it has SIGKILL pending. kill(2) marks SIGKILL pending on
// every thread before it returns, so a process killed a moment ago is dying at once,
// though a multi-threaded one can take a while from there to the exit that wait reports.
// (One window remains: the process has taken SIGKILL off its pending set and not yet
// set PF_EXITING; it lasts a few instructions, unless the machine is preempted there, and a
// read then finds it running, 'R', and not dying. StatFile.Dying closes it.)
func (s Stat) Dying() bool {
	return s.State == 'Z' || s.State == 'X' || s.State == 'x' ||
		s.Flags&pfExiting != 0 || s.Signal&(1<<(syscall.SIGKILL-1)) != 0
}

// ErrFormat is returned by ReadStat for a file that is not in the format of proc(5).
var ErrFormat = errors.New("procfs: not in the format proc(5) describes")

// ReadStat reads and parses /proc/PID/stat. It reads the file afresh each time: for a
// process read again and again without allocating, use a StatFile.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile(statPath(pid))
	if err != nil {
		return Stat{}, err
	}
	s, ok := ParseStat(b)
	if !ok {
		return Stat{}, fmt.Errorf("%s: %w", statPath(pid), ErrFormat)
	}
	return s, nil
}

func statPath(pid int) string { return fmt.Sprintf("/proc/%d/stat", pid) }

// A StatFile reads /proc/PID/stat of one process again and again. It opens the file on
// the first read and keeps it open until Close, so that a read is one pread(2) and
// allocates nothing. It is safe for concurrent use.
type StatFile struct {
	pid int

	mu sync.Mutex // guards the fields below; held across the pread, never across a wait
	fd int        // -1 until opened
	// statusFD (-1 until opened) and status: /proc/PID/status, read only when the stat
	// line cannot tell (killPendingLocked).
	statusFD int
	status   []byte
	closed   bool
	buf      [1024]byte // a stat line is about 300 bytes
}

// NewStatFile returns a StatFile for process pid. It opens nothing yet.
func NewStatFile(pid int) *StatFile {
	return &StatFile{pid: pid, fd: -1, statusFD: -1}
}

// Dying reports whether the process has exited or is on its way out (see Stat.Dying). A
// file that cannot be opened or read means the process is gone: dying. A line this
// package cannot parse does not make the process dying, so that a kernel that writes
// something else cannot make every process look dead. After Close, Dying is always true.
// It does not allocate, except to open the file on the first call.
func (f *StatFile) Dying() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return true
	}
	if f.fd < 0 {
		fd, err := unix.Open(statPath(f.pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return true
		}
		f.fd = fd
	}
	// A raw pread (a procfs read never blocks), for the reason worker's probe gives.
	n, _, e := unix.RawSyscall6(unix.SYS_PREAD64, uintptr(f.fd), uintptr(unsafe.Pointer(&f.buf[0])), uintptr(len(f.buf)), 0, 0, 0)
	if n == 0 || e != 0 {
		return true // ESRCH: the process has been reaped
	}
	s, ok := ParseStat(f.buf[:n])
	if ok && s.State == 'R' && !s.Dying() {
		// Running: it may be in the window Stat.Dying leaves, between taking SIGKILL off
		// its own pending set and PF_EXITING. kill(2) left SIGKILL in the process's shared
		// pending set too, where it stays until the process is reaped: /proc/PID/status
		// shows it. A worker waiting for its next message sleeps, so this costlier read is
		// rare.
		return f.killPendingLocked()
	}
	return ok && s.Dying()
}

// killPendingLocked reports whether /proc/PID/status shows SIGKILL in the process's shared
// pending set (ShdPnd). A file that cannot be read means the process is gone. f.mu is
// held. Like Dying, it opens the file and makes its buffer on the first call only.
func (f *StatFile) killPendingLocked() bool {
	if f.statusFD < 0 {
		fd, err := unix.Open(statusPath(f.pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return true
		}
		f.statusFD, f.status = fd, make([]byte, 4096) // a status file is about 1.5 KiB
	}
	n, _, e := unix.RawSyscall6(unix.SYS_PREAD64, uintptr(f.statusFD), uintptr(unsafe.Pointer(&f.status[0])), uintptr(len(f.status)), 0, 0, 0)
	if n == 0 || e != 0 {
		return true
	}
	pend, ok := ParseShdPnd(f.status[:n])
	return ok && pend&(1<<(syscall.SIGKILL-1)) != 0
}

// ParseShdPnd returns the shared pending signals of a /proc/PID/status file: the mask
// of its "ShdPnd:" line (bit n-1 for signal n). ok is false without such a line, or when
// its value is not hexadecimal or longer than 16 digits. It does not allocate.
func ParseShdPnd(b []byte) (mask uint64, ok bool) {
	const key = "ShdPnd:"
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if !bytes.HasPrefix(line, []byte(key)) {
			continue
		}
		v := bytes.TrimLeft(line[len(key):], " \t")
		if len(v) == 0 || len(v) > 16 {
			return 0, false
		}
		for _, c := range v {
			var d byte
			switch {
			case '0' <= c && c <= '9':
				d = c - '0'
			case 'a' <= c && c <= 'f':
				d = c - 'a' + 10
			case 'A' <= c && c <= 'F':
				d = c - 'A' + 10
			default:
				return 0, false
			}
			mask = mask<<4 | uint64(d)
		}
		return mask, true
	}
	return 0, false
}

func statusPath(pid int) string { return fmt.Sprintf("/proc/%d/status", pid) }

// Close closes the file. Call it once the process has been reaped, before its pid can
// be reused: a StatFile must not read another process's file. Close is idempotent.
func (f *StatFile) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fd >= 0 {
		_ = unix.Close(f.fd)
		f.fd = -1
	}
	if f.statusFD >= 0 {
		_ = unix.Close(f.statusFD)
		f.statusFD = -1
	}
	f.closed = true
}
