package fdio

import (
	"io"
	"syscall"
	"unsafe"
)

// nonblocking reports whether c's descriptor is in non-blocking mode, which is what makes
// a raw system call on it safe: it returns at once instead of holding the thread.
func nonblocking(raw syscall.RawConn) bool {
	ok := false
	_ = raw.Control(func(fd uintptr) {
		fl, _, e := syscall.RawSyscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
		ok = e == 0 && fl&syscall.O_NONBLOCK != 0
	})
	return ok
}

// Raw returns c's RawConn if c is backed by a non-blocking descriptor that the runtime
// polls (a net.Conn, or an *os.File from os.Pipe), and false otherwise.
func Raw(c any) (syscall.RawConn, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false
	}
	raw, err := sc.SyscallConn()
	if err != nil || !nonblocking(raw) {
		return nil, false
	}
	return raw, true
}

// Write writes b to the non-blocking descriptor fd with one raw system call (retried on
// EINTR). It returns how much was written; EAGAIN is returned as is.
func Write(fd uintptr, b []byte) (int, error) {
	return rawIO(syscall.SYS_WRITE, fd, b)
}

// read reads into b from the non-blocking descriptor fd with one raw system call.
func read(fd uintptr, b []byte) (int, error) {
	return rawIO(syscall.SYS_READ, fd, b)
}

func rawIO(trap, fd uintptr, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, _, e := syscall.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// Reader reads a non-blocking descriptor with raw system calls, waiting for input in the
// runtime's poller like the descriptor's own Read does (deadlines and Close work the same).
// It is not safe for concurrent use: one goroutine reads.
type Reader struct {
	raw  syscall.RawConn
	buf  []byte
	n    int
	err  error
	read func(fd uintptr) bool // made once, so that Read does not allocate
}

// NewReader returns a Reader for r if r is backed by a non-blocking descriptor, and r
// itself otherwise.
func NewReader(r io.Reader) io.Reader {
	raw, ok := Raw(r)
	if !ok {
		return r
	}
	rd := &Reader{raw: raw}
	rd.read = rd.readNow
	return rd
}

func (r *Reader) readNow(fd uintptr) bool {
	r.n, r.err = read(fd, r.buf)
	return r.err != syscall.EAGAIN
}

// Read reads what is available, waiting for it if nothing is.
func (r *Reader) Read(p []byte) (int, error) {
	r.buf = p
	err := r.raw.Read(r.read)
	n, rerr := r.n, r.err
	r.buf, r.err = nil, nil
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}
