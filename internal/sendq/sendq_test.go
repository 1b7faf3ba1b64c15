package sendq_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/taskd-dev/taskd/internal/sendq"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// conns returns the two ends of a pipe and of a unix socket: the kinds taskd writes to.
func conns(t *testing.T) map[string][2]io.ReadWriteCloser {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); accepted <- c }()
	c1, err := net.Dial("unix", ln.Addr().String())
	require.NoError(t, err)
	c2 := <-accepted
	return map[string][2]io.ReadWriteCloser{"pipe": {r, w}, "unix": {c2, c1}}
}

// TestOrderUnderBackpressure sends far more than the kernel buffers hold from many
// goroutines while the reader is slow: every line arrives whole, each sender's lines in
// order, none lost, and no sender blocks.
func TestOrderUnderBackpressure(t *testing.T) {
	for name, ends := range conns(t) {
		t.Run(name, func(t *testing.T) {
			rd, wr := ends[0], ends[1]
			q := sendq.New(wr, func(err error) { t.Errorf("write error: %v", err) })
			const senders, per = 8, 2000
			var wg sync.WaitGroup
			for s := range senders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range per {
						q.Send(fmt.Appendf(nil, "%d %d %0200d\n", s, i, i))
					}
				}()
			}
			wg.Wait() // all sent before anything was read: Send never blocked
			q.Close()
			next := make([]int, senders)
			sc := bufio.NewScanner(rd)
			n := 0
			for sc.Scan() {
				var s, i, pad int
				_, err := fmt.Sscanf(sc.Text(), "%d %d %d", &s, &i, &pad)
				require.NoError(t, err, "line %q", sc.Text())
				require.Equal(t, next[s], i, "sender %d out of order", s)
				next[s]++
				n++
			}
			assert.Equal(t, senders*per, n)
			<-q.Done()
			rd.Close()
		})
	}
}

func TestAbortUnblocksAndDrops(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	var gotErr error
	q := sendq.New(w, func(err error) { gotErr = err })
	big := make([]byte, 1<<20) // more than a pipe holds: the writer blocks
	q.Send(big)
	q.Abort()
	<-q.Done()
	assert.NoError(t, gotErr, "Abort is not reported as a write error")
	assert.False(t, q.Send([]byte("x\n")), "no sends after Abort")
}

func TestWriteErrorIsReportedOnce(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	r.Close() // EPIPE on write
	errs := make(chan error, 10)
	q := sendq.New(w, func(err error) { errs <- err })
	q.Send([]byte("a\n"))
	q.Send([]byte("b\n"))
	<-q.Done()
	require.Len(t, errs, 1)
	assert.Error(t, <-errs)
}

// TestLimitFailsAQueueNobodyReads: past its limit a queue fails with ErrBacklog, closes
// its Conn and accepts nothing more, instead of growing for as long as the peer sleeps.
func TestLimitFailsAQueueNobodyReads(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close() // nobody reads it
	errs := make(chan error, 10)
	q := sendq.New(w, func(err error) { errs <- err }).WithLimit(256 << 10)
	msg := make([]byte, 4<<10)
	sent := 0
	for q.Send(msg) {
		sent += len(msg)
		require.Less(t, sent, 1<<20, "the queue kept accepting past its limit")
	}
	<-q.Done()
	require.Len(t, errs, 1)
	assert.ErrorIs(t, <-errs, sendq.ErrBacklog)
	assert.False(t, q.Send([]byte("x\n")))
}

// TestCloseWithinGivesUpOnAPeerThatDoesNotRead: Close would wait for ever to flush to a
// peer that does not read; CloseWithin drops what is left after its delay.
func TestCloseWithinGivesUpOnAPeerThatDoesNotRead(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	q := sendq.New(w, nil)
	q.Send(make([]byte, 1<<20)) // more than the pipe holds: the writer blocks
	q.CloseWithin(50 * time.Millisecond)
	select {
	case <-q.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the queue still waits for the peer")
	}

	// A peer that reads gets everything before the Conn is closed.
	r2, w2, err := os.Pipe()
	require.NoError(t, err)
	defer r2.Close()
	q2 := sendq.New(w2, nil)
	q2.Send(make([]byte, 1<<20))
	q2.CloseWithin(time.Minute)
	n, err := io.Copy(io.Discard, r2)
	require.NoError(t, err)
	assert.EqualValues(t, 1<<20, n)
	<-q2.Done()
}

func BenchmarkSendIdle(b *testing.B) {
	r, w, _ := os.Pipe()
	go io.Copy(io.Discard, r)
	q := sendq.New(w, nil)
	msg := []byte(`{"t":"call","id":1,"m":"echo","a":["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]}` + "\n")
	b.ReportAllocs()
	for b.Loop() {
		q.Send(msg)
	}
	q.Close()
	<-q.Done()
	r.Close()
}

// TestWrittenTellsWhatReachedTheConn: a message written whole is Written; one that a
// failed write dropped is not, for good.
func TestWrittenTellsWhatReachedTheConn(t *testing.T) {
	for name, ends := range conns(t) {
		t.Run(name, func(t *testing.T) {
			q := sendq.New(ends[1].(sendq.Conn), nil)
			first, ok := q.AppendMark(func(b []byte) []byte { return append(b, "first\n"...) })
			require.True(t, ok)
			line, err := bufio.NewReader(ends[0]).ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, "first\n", line)
			assert.True(t, q.Written(first))

			ends[0].Close() // the peer goes away: the next write fails
			var second uint64
			require.Eventually(t, func() bool {
				m, ok := q.AppendMark(func(b []byte) []byte { return append(b, "second\n"...) })
				if ok {
					second = m
				}
				return !ok
			}, 5*time.Second, time.Millisecond)
			<-q.Done()
			assert.True(t, q.Written(first))
			assert.False(t, q.Written(second), "dropped by the failed write")
			third, ok := q.AppendMark(func(b []byte) []byte { return append(b, "third\n"...) })
			assert.False(t, ok)
			assert.False(t, q.Written(third), "not taken by a closed queue")
		})
	}
}
