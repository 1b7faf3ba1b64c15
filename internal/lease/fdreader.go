package lease

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FDReader reads a unix stream socket with recvmsg, keeping the descriptors that ride on
// the bytes (SCM_RIGHTS) in arrival order. The kernel hands a descriptor over with a read
// that includes the first byte it was sent with, and never with bytes sent after it, so a
// reader that parses lines takes the descriptor of a line that carries one with TakeFD
// once it has parsed that line: the FIFO lines up with the lines that carry one.
//
// An FDReader is for one goroutine (the connection's reader); Close may be called by that
// goroutine once it is done.
type FDReader struct {
	raw  syscall.RawConn
	oob  []byte
	msg  unix.Msghdr // reused: recvmsg allocates nothing
	iov  unix.Iovec
	fds  []*os.File
	p    []byte
	n    int
	err  error
	read func(fd uintptr) bool
}

// NewFDReader returns an FDReader for uc.
func NewFDReader(uc *net.UnixConn) (*FDReader, error) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &FDReader{raw: raw, oob: make([]byte, unix.CmsgSpace(4*4))}
	r.read = r.readNow
	return r, nil
}

// readNow is one recvmsg(2), a raw system call (the descriptor is non-blocking) on a
// message header kept in r, so that a read allocates nothing, as fdio's read does.
func (r *FDReader) readNow(fd uintptr) bool {
	r.iov.Base = &r.p[0]
	r.iov.SetLen(len(r.p))
	r.msg.Iov, r.msg.Iovlen = &r.iov, 1
	r.msg.Control = &r.oob[0]
	defer func() { r.iov.Base, r.msg.Iov, r.msg.Control = nil, nil, nil }()
	for {
		r.msg.SetControllen(len(r.oob)) // the kernel sets it to what it wrote, on success only
		n, _, e := unix.RawSyscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.msg)), unix.MSG_CMSG_CLOEXEC)
		if e == unix.EINTR {
			continue
		}
		if oobn := int(r.msg.Controllen); e == 0 && oobn > 0 {
			r.keep(r.oob[:oobn])
		}
		r.n, r.err = int(n), nil
		if e != 0 {
			r.n, r.err = 0, e
		}
		return e != unix.EAGAIN
	}
}

func (r *FDReader) keep(oob []byte) {
	for _, fd := range Rights(oob) {
		r.fds = append(r.fds, os.NewFile(uintptr(fd), "taskd-lease"))
	}
}

// Read reads what is available, waiting for it if nothing is; descriptors that come with
// the bytes are kept for TakeFD.
func (r *FDReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p = p
	err := r.raw.Read(r.read)
	n, rerr := r.n, r.err
	r.p, r.err = nil, nil
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// TakeFD returns the oldest descriptor received and not taken, or an error if none is
// waiting (the peer sent a line that says it carries one, without one).
func (r *FDReader) TakeFD() (*os.File, error) {
	if len(r.fds) == 0 {
		return nil, errNoFD
	}
	f := r.fds[0]
	r.fds[0] = nil
	r.fds = r.fds[1:]
	return f, nil
}

var errNoFD = errors.New("lease: no descriptor came with the line that announced one")

// Close closes the descriptors received and not taken.
func (r *FDReader) Close() {
	for _, f := range r.fds {
		f.Close()
	}
	r.fds = nil
}
