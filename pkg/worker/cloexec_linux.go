package worker

import "golang.org/x/sys/unix"

// recvFlags makes received descriptors close-on-exec atomically.
const recvFlags = unix.MSG_CMSG_CLOEXEC
