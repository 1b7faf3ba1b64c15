package sendq_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/lease"
	"github.com/taskd-dev/taskd/internal/sendq"
)

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	a, b, err := lease.Pair(syscall.SOCK_STREAM)
	require.NoError(t, err)
	ca, err := net.FileConn(a)
	require.NoError(t, err)
	cb, err := net.FileConn(b)
	require.NoError(t, err)
	a.Close()
	b.Close()
	return ca.(*net.UnixConn), cb.(*net.UnixConn)
}

// TestRightsRideOnTheirLine queues many lines, some carrying a descriptor, while the
// reader is slow (so most go through the writer goroutine and partial writes): every
// descriptor arrives with its own line, in order, and none leaks.
func TestRightsRideOnTheirLine(t *testing.T) {
	before := openFDs(t)
	w, r := unixPair(t)
	q := sendq.New(w, nil)
	const n = 300
	pad := strings.Repeat("x", 3000)
	go func() {
		for i := range n {
			line := fmt.Sprintf("%d %s\n", i, pad)
			if i%3 != 0 {
				q.Send([]byte(line))
				continue
			}
			pr, pw, err := os.Pipe()
			if err != nil {
				panic(err)
			}
			fmt.Fprintf(pw, "%d", i) // the descriptor names its line
			pw.Close()
			ok, err := q.AppendRights(func(b []byte) []byte { return append(b, line...) }, pr)
			if !ok || err != nil {
				panic(fmt.Sprint(ok, err))
			}
		}
		q.Close()
	}()
	fr, err := lease.NewFDReader(r)
	require.NoError(t, err)
	br := bufio.NewReaderSize(fr, 512)
	for i := range n {
		if i%50 == 0 {
			time.Sleep(5 * time.Millisecond) // let the socket fill up
		}
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		num, _, _ := strings.Cut(line, " ")
		require.Equal(t, strconv.Itoa(i), num)
		if i%3 != 0 {
			continue
		}
		f, err := fr.TakeFD()
		require.NoError(t, err, "line %d came without its descriptor", i)
		got, err := io.ReadAll(f)
		require.NoError(t, err)
		f.Close()
		assert.Equal(t, strconv.Itoa(i), string(got), "the descriptor of line %d", i)
	}
	_, err = fr.TakeFD()
	require.Error(t, err, "no stray descriptor")
	<-q.Done()
	fr.Close()
	r.Close()
	assert.Equal(t, before, openFDs(t), "descriptors leaked")
}

// TestRightsClosedOnAbort: descriptors queued and never sent are closed when the queue is
// aborted, and one handed to a closed queue at once.
func TestRightsClosedOnAbort(t *testing.T) {
	before := openFDs(t)
	w, r := unixPair(t)
	q := sendq.New(w, nil)
	big := strings.Repeat("y", 1<<20) + "\n"
	q.Send([]byte(big)) // nobody reads: the rest stays queued
	for range 5 {
		pr, pw, err := os.Pipe()
		require.NoError(t, err)
		pw.Close()
		ok, err := q.AppendRights(func(b []byte) []byte { return append(b, "x\n"...) }, pr)
		require.True(t, ok)
		require.NoError(t, err)
	}
	q.Abort()
	<-q.Done()
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	pw.Close()
	ok, err := q.AppendRights(func(b []byte) []byte { return append(b, "x\n"...) }, pr)
	assert.False(t, ok)
	assert.NoError(t, err)
	r.Close()
	assert.Equal(t, before, openFDs(t), "descriptors leaked")
}
