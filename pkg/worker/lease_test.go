//go:build linux

package worker

import (
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/taskd-dev/taskd/internal/wire"
)

// taskdSide plays taskd's half of the lease extension: the control socket, the stats page
// and the lease socketpairs, around serveOn running in this process.
type taskdSide struct {
	t    *testing.T
	h    *harness
	ctl  int    // taskd's end of the control socket
	page []byte // taskd's mapping of the stats page
}

func startLeased(t *testing.T, spec Spec) *taskdSide {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	memfd, err := unix.MemfdCreate("taskd-stats", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	require.NoError(t, unix.Ftruncate(memfd, statsSize))
	page, err := unix.Mmap(memfd, 0, statsSize, unix.PROT_READ, unix.MAP_SHARED)
	require.NoError(t, err)
	// The worker's copies, as a spawn would pass them (serveOn's caller owns them).
	wstats, err := unix.Dup(memfd)
	require.NoError(t, err)
	unix.Close(memfd)
	ctl, stats, err := openLeaseEndpoints(strconv.Itoa(fds[1]), strconv.Itoa(wstats))
	require.NoError(t, err)
	ts := &taskdSide{t: t, ctl: fds[0], page: page}
	t.Cleanup(func() {
		ts.h.wait()
		unix.Close(fds[0])
		unix.Close(fds[1])
		unix.Munmap(page)
		unix.Munmap(stats.mem)
	})
	ts.h = startWith(t, spec, endpoints{maxLine: 1 << 20, control: ctl, stats: stats})
	assert.Equal(t, `{"t":"ready","v":1,"pipeline":true,"lease":1}`, string(ts.h.recvLine()))
	return ts
}

// lease grants lease id: it sends the worker its end of a fresh socketpair and returns the
// client's end.
func (ts *taskdSide) lease(id uint64) *leaseClient {
	ts.t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(ts.t, err)
	require.NoError(ts.t, unix.Sendmsg(ts.ctl, appendControl(nil, tLease, id), unix.UnixRights(fds[0]), nil, 0))
	unix.Close(fds[0])
	require.NoError(ts.t, unix.SetNonblock(fds[1], true)) // pollable: deadlines work
	f := os.NewFile(uintptr(fds[1]), "lease-client")
	ts.t.Cleanup(func() { f.Close() })
	return &leaseClient{t: ts.t, f: f, lr: wire.NewLineReader(f, 0)}
}

func (ts *taskdSide) send(msg string) {
	ts.t.Helper()
	_, err := unix.Write(ts.ctl, []byte(msg))
	require.NoError(ts.t, err)
}

// recv reads one control packet, failing after 10s.
func (ts *taskdSide) recv() string {
	ts.t.Helper()
	fds := []unix.PollFd{{Fd: int32(ts.ctl), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 10_000)
	require.NoError(ts.t, err)
	require.Equal(ts.t, 1, n, "no control packet within 10s")
	buf := make([]byte, 4096)
	n, err = unix.Read(ts.ctl, buf)
	require.NoError(ts.t, err)
	return string(buf[:n])
}

// stats is a consistent read of the stats page, as taskd makes it.
type stats struct {
	calls, done, curID, lease, errs uint64
	start                           time.Time
	method                          string
}

func (ts *taskdSide) stats() stats {
	w := newStatsPage(ts.page).w
	for {
		seq := atomic.LoadUint64(&w[wSeq])
		if seq%2 == 1 {
			continue
		}
		s := stats{
			calls: atomic.LoadUint64(&w[wCalls]), done: atomic.LoadUint64(&w[wDone]),
			curID: atomic.LoadUint64(&w[wCurID]), lease: atomic.LoadUint64(&w[wLease]),
			errs: atomic.LoadUint64(&w[wErrs]), start: time.Unix(0, int64(atomic.LoadUint64(&w[wCurStart]))),
		}
		mlen := atomic.LoadUint64(&w[wMlen])
		var b []byte
		for i := uint64(0); i < mlen && i < maxMethodBytes; i += 8 {
			v := atomic.LoadUint64(&w[wMethod+i/8])
			for j := uint64(0); j < 8 && i+j < mlen; j++ {
				b = append(b, byte(v>>(8*j)))
			}
		}
		s.method = string(b)
		require.Equal(ts.t, uint64(statsMagic), atomic.LoadUint64(&w[wMagic]))
		if atomic.LoadUint64(&w[wSeq]) == seq {
			return s
		}
	}
}

type leaseClient struct {
	t  *testing.T
	f  *os.File
	lr *wire.LineReader
}

func (c *leaseClient) send(lines ...string) {
	c.t.Helper()
	_, err := c.f.WriteString(strings.Join(lines, "\n") + "\n")
	require.NoError(c.t, err)
}

func (c *leaseClient) recv() wire.WorkerMsg {
	c.t.Helper()
	require.NoError(c.t, c.f.SetReadDeadline(time.Now().Add(10*time.Second)))
	line, err := c.lr.ReadLine()
	require.NoError(c.t, err)
	m, err := wire.DecodeWorkerMsg(line)
	require.NoError(c.t, err, "line %s", line)
	return m
}

func TestLease(t *testing.T) {
	started := make(chan struct{}, 1)
	var dones atomic.Int32
	ts := startLeased(t, Spec{
		Methods: map[string]Func{
			"echo": echo,
			"fail": func(context.Context, *Call) (any, error) { return nil, errors.New("no") },
			"wait": func(ctx context.Context, _ *Call) (any, error) {
				started <- struct{}{}
				<-ctx.Done()
				return nil, ctx.Err()
			},
			"bye": func(_ context.Context, c *Call) (any, error) { c.Bye("too big"); return 1, nil },
		},
		CheckoutDone: func(context.Context) error { dones.Add(1); return nil },
	})

	c := ts.lease(1)
	// Calls, pipelined with the ep rule: 3 was made before the caller saw 2's error.
	c.send(`{"t":"call","id":1,"m":"echo","ep":0,"a":[1]}`, `{"t":"call","id":2,"m":"fail","ep":0}`,
		`{"t":"call","id":3,"m":"echo","ep":0,"a":[3]}`, `{"t":"call","id":4,"m":"echo","ep":1,"a":[4]}`)
	m := c.recv()
	assert.Equal(t, wire.TOK, m.T)
	assert.Equal(t, "[1]", string(m.R))
	assert.Equal(t, wire.TErr, c.recv().T)
	m = c.recv()
	assert.Equal(t, wire.TAborted, m.T)
	assert.Equal(t, uint64(3), m.ID)
	m = c.recv()
	assert.Equal(t, "[4]", string(m.R))
	st := ts.stats()
	assert.Equal(t, stats{calls: 3, done: 3, errs: 1, lease: 1, method: "echo"}, stats{
		calls: st.calls, done: st.done, errs: st.errs, lease: st.lease, method: st.method, curID: st.curID})

	// A long call is in the stats page while it runs; taskd cancels it on control.
	before := time.Now()
	c.send(`{"t":"call","id":5,"m":"wait","ep":1}`)
	<-started
	st = ts.stats()
	assert.Equal(t, uint64(5), st.curID)
	assert.Equal(t, uint64(1), st.lease)
	assert.Equal(t, "wait", st.method)
	assert.Equal(t, uint64(4), st.calls)
	assert.Equal(t, uint64(3), st.done)
	assert.False(t, st.start.Before(before.Add(-time.Millisecond)), "start %v, sent at %v", st.start, before)
	ts.send(`{"t":"cancel","id":5}`)
	m = c.recv()
	assert.Equal(t, wire.TErr, m.T)
	assert.Contains(t, string(m.E), "context.Canceled")
	st = ts.stats()
	assert.Equal(t, uint64(0), st.curID)
	assert.Equal(t, uint64(4), st.done)
	assert.Equal(t, uint64(2), st.errs)

	// Bye on a lease goes to taskd on control, not to the client.
	c.send(`{"t":"call","id":6,"m":"bye","ep":2}`)
	assert.Equal(t, "1", string(c.recv().R))
	assert.Equal(t, `{"t":"bye","msg":"too big"}`, strings.TrimSpace(ts.recv()))

	// End: the worker closes its end, runs the hook and says ended.
	ts.send(`{"t":"end","id":1}` + "\n")
	assert.Equal(t, `{"t":"ended","id":1}`, ts.recv())
	assert.Equal(t, int32(1), dones.Load())
	require.NoError(t, c.f.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err := c.lr.ReadLine()
	assert.ErrorIs(t, err, io.EOF, "the client's end reads EOF")
	_, err = c.f.WriteString(`{"t":"call","id":7,"m":"echo"}` + "\n")
	assert.ErrorIs(t, err, syscall.EPIPE, "a client that keeps writing gets EPIPE")

	// A second lease, whose client goes away early: the worker waits for end.
	c2 := ts.lease(2)
	c2.send(`{"t":"call","id":1,"m":"echo","ep":0,"a":["x"]}`)
	assert.Equal(t, `["x"]`, string(c2.recv().R))
	c2.f.Close()
	ts.send(`{"t":"future-message","id":9}`) // ignored
	ts.send(`{"t":"end","id":2}`)
	assert.Equal(t, `{"t":"ended","id":2}`, ts.recv())
	assert.Equal(t, int32(2), dones.Load())
	ts.send(`{"t":"end","id":2}`)
	assert.Equal(t, `{"t":"ended","id":2}`, ts.recv(), "an end for a lease that is over is answered too")

	// Relayed calls still work, and show in the same page.
	ts.h.send(`{"t":"call","id":1,"m":"echo","a":[]}`)
	assert.Equal(t, `[]`, string(ts.h.recvOK(1)))
	st = ts.stats()
	assert.Equal(t, uint64(7), st.calls)
	assert.Equal(t, uint64(0), st.lease)
}

func TestLeaseEndFinishesTheRunningCall(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	var dones atomic.Int32
	ts := startLeased(t, Spec{
		Default: func(ctx context.Context, _ *Call) (any, error) {
			close(started)
			<-release
			return "late", nil
		},
		CheckoutDone: func(context.Context) error { dones.Add(1); return nil },
	})
	c := ts.lease(1)
	c.send(`{"t":"call","id":1,"ep":0}`)
	<-started
	ts.send(`{"t":"end","id":1}`)
	time.Sleep(10 * time.Millisecond) // the end is being handled; the call runs on
	assert.Equal(t, int32(0), dones.Load(), "the hook waits for the running call")
	close(release)
	assert.Equal(t, `"late"`, string(c.recv().R), "a call already read is answered")
	assert.Equal(t, `{"t":"ended","id":1}`, ts.recv())
	assert.Equal(t, int32(1), dones.Load())
}

func TestControlEOFExits(t *testing.T) {
	ts := startLeased(t, Spec{Default: echo})
	c := ts.lease(1)
	c.send(`{"t":"call","id":1,"ep":0,"a":[1]}`)
	assert.Equal(t, `[1]`, string(c.recv().R))
	require.NoError(t, unix.Shutdown(ts.ctl, unix.SHUT_RDWR)) // taskd is gone
	select {
	case err := <-ts.h.done:
		ts.h.err, ts.h.ended = err, true
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after the control socket closed")
	}
}

func TestLeaseEndpointsChecked(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	memfd, err := unix.MemfdCreate("taskd-stats", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	defer unix.Close(memfd)
	_, _, err = openLeaseEndpoints(strconv.Itoa(fds[1]), strconv.Itoa(memfd))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a SOCK_SEQPACKET socket")

	seq, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(seq[0])
	defer unix.Close(seq[1])
	_, _, err = openLeaseEndpoints(strconv.Itoa(seq[1]), strconv.Itoa(memfd))
	require.Error(t, err, "a page of 0 bytes")
	assert.Contains(t, err.Error(), "want 4096")
	_, _, err = openLeaseEndpoints("x", "4")
	assert.ErrorContains(t, err, "TASKD_CONTROL_FD")

	// Unusable endpoints: no lease in ready, calls relayed as before.
	h := startWith(t, Spec{Default: echo}, endpoints{leaseErr: errors.New("TASKD_STATS_FD=9: bad")})
	assert.Equal(t, strings.TrimSuffix(wantReady, "\n"), string(h.recvLine()))
	h.send(`{"t":"call","id":1,"a":[2]}`)
	assert.Equal(t, `[2]`, string(h.recvOK(1)))
	require.NoError(t, h.wait())
	assert.Contains(t, h.stderr.String(), "direct leases off")
}

func TestLeaseCheckoutDoneFailsEndsServe(t *testing.T) {
	ts := startLeased(t, Spec{Default: echo, CheckoutDone: func(context.Context) error { return errors.New("rollback failed") }})
	c := ts.lease(1)
	c.send(`{"t":"call","id":1,"ep":0,"a":[1]}`)
	assert.Equal(t, `[1]`, string(c.recv().R))
	ts.send(`{"t":"end","id":1}`)
	select {
	case err := <-ts.h.done:
		ts.h.err, ts.h.ended = err, true
		require.ErrorContains(t, err, "CheckoutDone failed")
		assert.ErrorContains(t, err, "rollback failed")
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after the lease's CheckoutDone failed")
	}
}

func TestStdinEOFEndsLeases(t *testing.T) {
	started := make(chan struct{})
	ts := startLeased(t, Spec{Default: func(ctx context.Context, _ *Call) (any, error) {
		close(started)
		<-ctx.Done()
		return "stopped", nil
	}})
	c := ts.lease(1)
	c.send(`{"t":"call","id":1,"ep":0}`)
	<-started
	require.NoError(t, ts.h.wait(), "EOF on stdin: the leased call is cancelled and serve returns")
	assert.Equal(t, `"stopped"`, string(c.recv().R), "the running call is answered")
}
