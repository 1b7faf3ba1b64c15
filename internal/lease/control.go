package lease

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Control message types (the "t" field of a control packet).
const (
	TLease  = "lease"  // taskd → worker: {"t":"lease","id":L} with the worker's end of a new pair
	TEnd    = "end"    // taskd → worker: stop serving lease L, close it, run the done hook
	TEnded  = "ended"  // worker → taskd: lease L is closed and the done hook has run
	TCancel = "cancel" // taskd → worker: cancel the call with protocol id ID of the current lease
	TBye    = "bye"    // worker → taskd: retire me after this checkout
)

// MaxPacket is the longest control packet either side sends or accepts.
const MaxPacket = 4096

// Environment variables naming the worker's inherited descriptors.
const (
	EnvControlFD = "TASKD_CONTROL_FD"
	EnvStatsFD   = "TASKD_STATS_FD"
)

// Version is the version of the lease extension this package speaks ("lease" on ready).
const Version = 1

// Msg is one control message. Unknown fields are ignored; so are unknown types, by both
// sides (forward compatibility).
type Msg struct {
	T   string `json:"t"`
	ID  uint64 `json:"id,omitempty"`
	Msg string `json:"msg,omitempty"`
}

// ErrPacket is matched (errors.Is) by every error of Decode and of Conn.Recv about a
// packet's content.
var ErrPacket = errors.New("lease: bad control packet")

// Decode decodes one control packet: a JSON object with a string "t", an optional trailing
// newline tolerated. It returns an error matching ErrPacket for anything else.
func Decode(pkt []byte) (Msg, error) {
	pkt = bytes.TrimSuffix(pkt, []byte("\n"))
	if len(pkt) > MaxPacket {
		return Msg{}, fmt.Errorf("%w: %d bytes, over %d", ErrPacket, len(pkt), MaxPacket)
	}
	var m Msg
	if len(pkt) == 0 || pkt[0] != '{' {
		return Msg{}, fmt.Errorf("%w: not a JSON object: %q", ErrPacket, snippet(pkt))
	}
	if err := json.Unmarshal(pkt, &m); err != nil {
		return Msg{}, fmt.Errorf("%w: %v in %q", ErrPacket, err, snippet(pkt))
	}
	if m.T == "" {
		return Msg{}, fmt.Errorf(`%w: no "t" in %q`, ErrPacket, snippet(pkt))
	}
	return m, nil
}

// Append appends m's packet (JSON, no newline) to b.
func Append(b []byte, m Msg) []byte {
	j, _ := json.Marshal(m) // a struct of strings and numbers: always encodes
	return append(b, j...)
}

func snippet(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// Conn is one end of a control channel (a SOCK_SEQPACKET unix socket). Send is safe for
// concurrent use; Recv is for one reader goroutine.
type Conn struct {
	uc  *net.UnixConn
	buf []byte
	oob []byte
}

// NewConn takes over f, one end of a SOCK_SEQPACKET socketpair, and returns it as a Conn
// polled by the runtime (Close unblocks a Recv). f is closed.
func NewConn(f *os.File) (*Conn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("lease: control socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("lease: control socket is a %T, not a unix socket", c)
	}
	return &Conn{uc: uc, buf: make([]byte, MaxPacket+1), oob: make([]byte, unix.CmsgSpace(4*4))}, nil
}

// Send sends m as one packet; if fd is not nil, its descriptor rides on it (SCM_RIGHTS).
// The caller keeps fd (and closes its copy when it likes).
func (c *Conn) Send(m Msg, fd *os.File) error {
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	_, _, err := c.uc.WriteMsgUnix(Append(nil, m), oob, nil)
	return err
}

// Recv reads one packet. Descriptors that came with it are closed (taskd accepts none);
// a packet that does not decode is returned as an error matching ErrPacket, and the
// channel stays usable. Other errors (io.EOF, a closed Conn) are final.
func (c *Conn) Recv() (Msg, error) {
	n, oobn, flags, _, err := c.uc.ReadMsgUnix(c.buf, c.oob)
	if oobn > 0 {
		closeRights(c.oob[:oobn])
	}
	if err != nil {
		return Msg{}, err
	}
	if n == 0 {
		return Msg{}, errEOF
	}
	if flags&unix.MSG_TRUNC != 0 || n > MaxPacket {
		return Msg{}, fmt.Errorf("%w: longer than %d bytes", ErrPacket, MaxPacket)
	}
	return Decode(c.buf[:n])
}

// Close closes the Conn; a Recv under way returns.
func (c *Conn) Close() error { return c.uc.Close() }

// errEOF is a zero-length read: on a SOCK_SEQPACKET socket, the peer has closed.
var errEOF = fmt.Errorf("lease: control channel closed by the peer: %w", os.ErrClosed)

// closeRights closes every descriptor in the control messages oob.
func closeRights(oob []byte) {
	for _, fd := range Rights(oob) {
		unix.Close(fd)
	}
}

// Rights returns the descriptors that the control messages oob carry (SCM_RIGHTS), in
// order; the caller owns them. Messages that do not parse are skipped.
func Rights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var all []int
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		all = append(all, fds...)
	}
	return all
}

// Pair returns the two ends of a new socketpair(AF_UNIX, typ|SOCK_CLOEXEC): typ is
// unix.SOCK_SEQPACKET for a control channel, unix.SOCK_STREAM for a lease.
func Pair(typ int) (a, b *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("lease: socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "lease-a"), os.NewFile(uintptr(fds[1]), "lease-b"), nil
}
