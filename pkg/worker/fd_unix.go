//go:build unix

package worker

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// takeStdio moves the protocol off descriptors 0 and 1. It returns close-on-exec
// duplicates of the original stdin and stdout for the protocol (read and written with
// plain blocking system calls: see rawFD), makes descriptor 1 a copy
// of stderr, so that everything else written to "stdout" (fmt.Println, C libraries, child
// processes) ends up on stderr, and opens /dev/null on descriptor 0, so that nothing else
// (a child process, a library prompting for input) can read protocol input.
func takeStdio() (in, out *rawFD, err error) {
	inFd, err := unix.FcntlInt(0, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, nil, fmt.Errorf("worker: duplicating stdin for the protocol: %w (was the worker started without a stdin?)", err)
	}
	outFd, err := unix.FcntlInt(1, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		unix.Close(inFd)
		return nil, nil, fmt.Errorf("worker: duplicating stdout for the protocol: %w (was the worker started without a stdout?)", err)
	}
	// One goroutine waits on the input: a blocking read(2) costs a third of the system
	// calls of Go's netpoller (BenchmarkPipe). Only for a pipe or socket, whose open file
	// nobody else shares (fd 0 is about to be /dev/null and children do not inherit inFd);
	// a terminal's is shared with the shell.
	if isPipeOrSocket(inFd) {
		if err := unix.SetNonblock(inFd, false); err != nil {
			unix.Close(inFd)
			unix.Close(outFd)
			return nil, nil, fmt.Errorf("worker: making the protocol input blocking: %w", err)
		}
	}
	in, out = &rawFD{fd: inFd}, &rawFD{fd: outFd}
	if err := redirect(); err != nil {
		in.Close()
		out.Close()
		return nil, nil, err
	}
	return in, out, nil
}

func redirect() error {
	if err := unix.Dup2(2, 1); err != nil {
		return fmt.Errorf("worker: pointing stdout at stderr: %w", err)
	}
	null, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("worker: opening %s for stdin: %w", os.DevNull, err)
	}
	defer unix.Close(null)
	if err := unix.Dup2(null, 0); err != nil {
		return fmt.Errorf("worker: pointing stdin at %s: %w", os.DevNull, err)
	}
	return nil
}

func isPipeOrSocket(fd int) bool {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false
	}
	mode := st.Mode & unix.S_IFMT
	return mode == unix.S_IFIFO || mode == unix.S_IFSOCK
}
