package worker

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// siginfoPid returns si_pid from a siginfo filled by waitid: non-zero when a child has
// changed state. On Linux the pid sits after si_signo, si_errno, si_code and padding.
func siginfoPid(info *unix.Siginfo) int32 {
	return *(*int32)(unsafe.Add(unsafe.Pointer(info), 16))
}
