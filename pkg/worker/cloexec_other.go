//go:build unix && !linux

package worker

// recvFlags: no MSG_CMSG_CLOEXEC here; control.read sets close-on-exec right after.
const recvFlags = 0
