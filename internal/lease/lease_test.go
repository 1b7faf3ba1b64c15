package lease

import (
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Msg
		bad  bool
	}{
		{in: `{"t":"lease","id":3}`, want: Msg{T: TLease, ID: 3}},
		{in: `{"t":"ended","id":3}` + "\n", want: Msg{T: TEnded, ID: 3}},
		{in: `{"t":"bye","msg":"leaky","x":[1]}`, want: Msg{T: TBye, Msg: "leaky"}},
		{in: `{"t":"future"}`, want: Msg{T: "future"}},
		{in: `{"id":3}`, bad: true},
		{in: `{"t":"end","id":-1}`, bad: true},
		{in: `[]`, bad: true},
		{in: ``, bad: true},
		{in: `{"t":"end"` + strings.Repeat(" ", MaxPacket) + `}`, bad: true},
	} {
		m, err := Decode([]byte(tc.in))
		if tc.bad {
			require.ErrorIs(t, err, ErrPacket, "%q", tc.in)
			continue
		}
		require.NoError(t, err, "%q", tc.in)
		assert.Equal(t, tc.want, m)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"t":"lease","id":1}`, `{"t":"ended","id":18446744073709551615}`, `{"t":"bye","msg":"x"}` + "\n",
		`{"t":"cancel","id":1.5}`, `{"t":""}`, `{`, "\xff", `{"t":"end","id":1}` + "\n\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		m, err := Decode(pkt)
		if err != nil {
			if !errors.Is(err, ErrPacket) {
				t.Fatalf("error %v does not match ErrPacket", err)
			}
			return
		}
		if m.T == "" {
			t.Fatalf("accepted a packet without t: %q", pkt)
		}
		again, err := Decode(Append(nil, m))
		if err != nil || again != m {
			t.Fatalf("%+v does not round-trip: %+v, %v", m, again, err)
		}
	})
}

// TestControlCarriesDescriptor sends a lease packet with a socketpair end across a control
// channel, as taskd does, and reads it as a worker does (plain recvmsg).
func TestControlCarriesDescriptor(t *testing.T) {
	a, b, err := Pair(unix.SOCK_SEQPACKET)
	require.NoError(t, err)
	defer b.Close()
	c, err := NewConn(a)
	require.NoError(t, err)
	defer c.Close()
	w, cl, err := Pair(unix.SOCK_STREAM)
	require.NoError(t, err)
	defer cl.Close()
	require.NoError(t, c.Send(Msg{T: TLease, ID: 1}, w))
	w.Close()

	buf, oob := make([]byte, MaxPacket), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(int(b.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	require.NoError(t, err)
	m, err := Decode(buf[:n])
	require.NoError(t, err)
	assert.Equal(t, Msg{T: TLease, ID: 1}, m)
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	require.NoError(t, err)
	fds, err := unix.ParseUnixRights(&msgs[0])
	require.NoError(t, err)
	require.Len(t, fds, 1)
	got := os.NewFile(uintptr(fds[0]), "w")
	_, err = got.Write([]byte("hi"))
	require.NoError(t, err)
	got.Close()
	p := make([]byte, 2)
	_, err = io.ReadFull(cl, p)
	require.NoError(t, err)
	assert.Equal(t, "hi", string(p), "the descriptor is the worker's end of the pair")

	// The worker's answer, and a stray descriptor it sends, which taskd closes.
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	_, err = unix.SendmsgN(int(b.Fd()), []byte(`{"t":"ended","id":1}`), unix.UnixRights(int(pr.Fd())), nil, 0)
	require.NoError(t, err)
	pr.Close()
	m, err = c.Recv()
	require.NoError(t, err)
	assert.Equal(t, Msg{T: TEnded, ID: 1}, m)
	_, err = pw.Write([]byte("x"))
	assert.ErrorIs(t, err, syscall.EPIPE, "the stray descriptor was closed")
	pw.Close()

	_, err = unix.Write(int(b.Fd()), []byte(`nope`))
	require.NoError(t, err)
	_, err = c.Recv()
	require.ErrorIs(t, err, ErrPacket)
	b.Close()
	_, err = c.Recv()
	require.Error(t, err, "EOF once the worker's end is closed")
	require.NotErrorIs(t, err, ErrPacket)
}

func TestPageSeqlock(t *testing.T) {
	f, err := NewStatsFile()
	require.NoError(t, err)
	defer f.Close()
	w, err := Map(int(f.Fd()), true)
	require.NoError(t, err)
	defer w.Unmap()
	r, err := Map(int(f.Fd()), false)
	require.NoError(t, err)
	defer r.Unmap()

	_, ok := r.Read()
	assert.False(t, ok, "no magic yet")
	w.Init()
	s, ok := r.Read()
	require.True(t, ok)
	assert.Equal(t, Snap{}, s)

	start := time.Unix(1700000000, 5)
	w.Begin(7, 2, "hash", start)
	s, ok = r.Read()
	require.True(t, ok)
	assert.Equal(t, Snap{Calls: 1, CurID: 7, CurStart: start, Lease: 2, Method: "hash"}, s)
	w.End(true)
	s, _ = r.Read()
	assert.Equal(t, Snap{Calls: 1, Done: 1, Errs: 1}, s)
	w.Begin(8, 0, strings.Repeat("m", 300), start)
	s, _ = r.Read()
	assert.Equal(t, strings.Repeat("m", MaxMethod), s.Method, "long names are cut")
	w.End(false)

	// A reader never sees a torn call: method and id always belong together.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	defer func() { close(stop); wg.Wait() }() // before the pages are unmapped
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(1); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			m := "short"
			if i%2 == 0 {
				m = "a-much-longer-method-name"
			}
			w.Begin(i, i, m, start)
			w.End(false)
		}
	}()
	for range 20000 {
		s, ok := r.Read()
		if !ok || s.CurID == 0 {
			continue
		}
		want := "short"
		if s.CurID%2 == 0 {
			want = "a-much-longer-method-name"
		}
		require.Equal(t, want, s.Method, "call %d", s.CurID)
		require.Equal(t, s.CurID, s.Lease)
	}
}

func TestMapRefusesShortFile(t *testing.T) {
	fd, err := unix.MemfdCreate("short", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	defer unix.Close(fd)
	_, err = Map(fd, false)
	require.ErrorContains(t, err, "want 4096")
}
