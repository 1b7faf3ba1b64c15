package server_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/procfs"
	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// Tests of what taskd does with lines that are too long, that it has no memory left for,
// or that are not UTF-8, from clients and from workers.

const mib = 1 << 20

// unterminated returns a request line of n bytes without its newline: the start of a ping
// whose padding never ends.
func unterminated(n int) []byte {
	b := []byte(`{"t":"ping","id":1,"pad":"`)
	return append(b, strings.Repeat("x", n-len(b))...)
}

// readFatal reads what taskd sent on c until it closes the connection, and returns the
// fatal message it got (nil if none), the other messages, and how the connection ended.
func readFatal(t *testing.T, c net.Conn) (fatal map[string]any, others []map[string]any, end error) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return fatal, others, err
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal(line, &m), "%q", line)
		if m["t"] == "fatal" {
			fatal = m
		} else {
			others = append(others, m)
		}
	}
}

// closedByPeer reports whether err is how a read ends on a connection the peer closed: EOF,
// or ECONNRESET when it closed with bytes of ours left unread.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// TestClientLineOverTheLimitIsRefusedAtOnce: taskd refuses a client's line as soon as it
// has read more than max_message_bytes of it, without waiting for the rest: the client
// that has sent max+1 bytes gets a fatal error naming the limit, the connection closes,
// and what it still had to send can no longer be written.
func TestClientLineOverTheLimitIsRefusedAtOnce(t *testing.T) {
	d := taskdtest.Start(t, "max_message_bytes: 1MiB\ninterfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 0"))
	c, err := net.Dial("unix", d.Socket)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetWriteDeadline(time.Now().Add(20*time.Second)))
	_, err = c.Write(unterminated(mib + 1))
	require.NoError(t, err)

	fatal, _, end := readFatal(t, c)
	require.NotNil(t, fatal, "taskd said nothing before closing (%v)", end)
	assert.Contains(t, fatal["msg"], "longer than 1048576 bytes (max_message_bytes)")
	assert.Contains(t, fatal["msg"], `{\"t\":\"ping\"`, "the error quotes the start of the line")
	assert.True(t, closedByPeer(end), "the connection ended with %v", end)

	// The rest of the line (another MiB) cannot be sent: taskd is not reading it.
	_, err = c.Write(unterminated(mib))
	require.Error(t, err)
	assert.NotErrorIs(t, err, os.ErrDeadlineExceeded, "taskd still reads the line it refused")

	_, err = newClient(t, d, "echo").Ping(ctxT(t))
	require.NoError(t, err, "taskd serves others")
}

// TestWorkerEndlessLineIsAProtocolError: a worker whose reply line never ends is killed
// with protocol_error once it has written max_message_bytes of it (its call_timeout is far
// away, so nothing else can end the call), and its caller gets a protocol error.
func TestWorkerEndlessLineIsAProtocolError(t *testing.T) {
	d := taskdtest.Start(t, "max_message_bytes: 1MiB\ninterfaces:\n"+
		taskdtest.WorkerYAML("echo", "raw", "min_idle: 0\ncall_timeout: 10m"))
	c := newClient(t, d, "echo", func(cfg *client.Config) { cfg.Timeout = 10 * time.Minute })
	err := c.Call(ctxT(t), "endless", nil)
	require.ErrorIs(t, err, client.ErrProtocol)
	require.ErrorIs(t, err, client.ErrWorkerLost)
	assert.Contains(t, err.Error(), "longer than 1048576 bytes")
	assert.NotContains(t, err.Error(), "call_timeout")
	require.Eventually(t, func() bool { return status(t, c, "echo").Exits["protocol_error"] == 1 },
		10*time.Second, 10*time.Millisecond)
}

// TestLongLinesOfManyClientsKeepMemoryBounded: 32 connections each send a line of
// 2 × max_message_bytes at once. Before lines were refused at the limit and counted
// against max_line_memory, each connection buffered the whole line (16 of them sending
// 17 MiB took taskd from 75 to 550 MiB).
//
// The bound on taskd's peak RSS growth, with max_message_bytes = M = 1 MiB and
// max_line_memory at its default, L = 4 M:
//   - line buffers: at most L live at once; a buffer grows by doubling, and the garbage
//     of the smaller ones plus the GC's headroom (GOGC=100: the heap may reach twice the
//     live heap before a collection) at most doubles that: 2 L = 8 MiB;
//   - per connection, whatever its line: a 64 KiB read buffer, a goroutine stack, the
//     session and its send queue, under 128 KiB, doubled by the GC's headroom again:
//     32 × 256 KiB = 8 MiB;
//   - the runtime's own slack (spans, arenas, the logger's allocations): 16 MiB.
//
// So 32 MiB in all, where buffering each connection's line up to the limit takes 32 × M
// = 32 MiB for the lines alone, and more with their garbage (75 MiB measured).
// Measured with the fix: 13 to 17 MiB.
func TestLongLinesOfManyClientsKeepMemoryBounded(t *testing.T) {
	const conns, m = 32, mib
	d := taskdtest.Start(t, "max_message_bytes: 1MiB\ninterfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 0"))
	_, err := newClient(t, d, "echo").Ping(ctxT(t))
	require.NoError(t, err)
	before, err := procfs.RSS(d.PID())
	require.NoError(t, err)

	line := unterminated(2 * m)
	fatals := make([]string, conns)
	var wg sync.WaitGroup
	for i := range conns {
		c, err := net.Dial("unix", d.Socket)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.SetWriteDeadline(time.Now().Add(20*time.Second)))
		wg.Go(func() { _, _ = c.Write(line) }) // fails once taskd has refused the line
		wg.Go(func() {
			if fatal, _, _ := readFatal(t, c); fatal != nil {
				fatals[i], _ = fatal["msg"].(string)
			}
		})
	}
	wg.Wait()
	for i, f := range fatals {
		// Too long, or refused earlier for want of memory: either way not buffered whole.
		ok := strings.Contains(f, "max_message_bytes") || strings.Contains(f, "max_line_memory")
		assert.True(t, ok, "connection %d: fatal %q", i, f)
	}

	peak, err := procfs.PeakRSS(d.PID())
	require.NoError(t, err)
	const bound = 2*4*m + conns*256<<10 + 16*m
	t.Logf("taskd's RSS: %d MiB before, peak %d MiB: grew %.1f MiB (bound %d MiB)",
		before>>20, peak>>20, float64(peak-before)/mib, bound>>20)
	assert.Less(t, peak-before, int64(bound), "taskd's peak RSS grew beyond the bound")
	_, err = newClient(t, d, "echo").Ping(ctxT(t))
	require.NoError(t, err, "taskd serves on")
}

// TestLineMemoryIsSharedByConnections: with max_line_memory = max_message_bytes, two
// connections that each send most of a long line cannot both be served: one is refused
// with a fatal error naming max_line_memory (whichever asked for memory when the other
// held it), and the other, once it ends its line, is answered.
func TestLineMemoryIsSharedByConnections(t *testing.T) {
	d := taskdtest.Start(t, "max_message_bytes: 1MiB\nmax_line_memory: 1MiB\ninterfaces:\n"+
		taskdtest.WorkerYAML("echo", "raw", "min_idle: 0"))
	type result struct {
		i      int
		fatal  map[string]any
		others []map[string]any
		end    error
	}
	var cs [2]*net.UnixConn
	results := make(chan result, 2)
	for i := range cs {
		c, err := net.Dial("unix", d.Socket)
		require.NoError(t, err)
		defer c.Close()
		cs[i] = c.(*net.UnixConn)
		go func() {
			fatal, others, end := readFatal(t, c)
			results <- result{i, fatal, others, end}
		}()
	}
	for _, c := range cs {
		require.NoError(t, c.SetWriteDeadline(time.Now().Add(20*time.Second)))
		_, _ = c.Write(unterminated(700 << 10)) // fails if taskd refused it meanwhile
	}
	first := <-results // one is refused; the other waits for the end of its line
	require.NotNil(t, first.fatal, "connection %d ended without a fatal message (%v)", first.i, first.end)
	assert.Contains(t, first.fatal["msg"], "max_line_memory")
	assert.Contains(t, first.fatal["msg"], "short of memory")

	other := cs[1-first.i]
	_, err := other.Write([]byte("\"}\n"))
	if err == nil { // unless both were refused at once
		require.NoError(t, other.CloseWrite()) // taskd answers, then ends the session
	}
	second := <-results
	if err == nil {
		require.Len(t, second.others, 1, "the line that got the memory is served")
		assert.Equal(t, "pong", second.others[0]["t"])
	}
}

// TestClientNotUTF8: a call whose arguments are not valid UTF-8 fails with invalid_utf8
// and is not run, and the checkout and the connection go on; a one-shot request with
// such arguments is refused the same way; any other request that is not UTF-8 is a
// protocol error that closes the connection.
func TestClientNotUTF8(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	r := dialRaw(t, d)
	r.send(`{"t":"checkout","id":1,"iface":"echo"}`)
	g := r.recv()
	require.Equal(t, "granted", g["t"])
	co := int(g["co"].(float64))
	r.send(fmt.Sprintf("{\"t\":\"call\",\"co\":%d,\"id\":1,\"m\":\"echo\",\"a\":[\"caf\xe9\"]}", co))
	m := r.recv()
	assert.Equal(t, "fail", m["t"])
	assert.Equal(t, "invalid_utf8", m["code"])
	assert.EqualValues(t, 1, m["id"])
	assert.Contains(t, m["msg"], "not valid UTF-8 (byte 0xe9")
	r.send(fmt.Sprintf(`{"t":"call","co":%d,"id":2,"m":"echo","a":["café"]}`, co))
	m = r.recv()
	assert.Equal(t, "ok", m["t"], "the checkout goes on: %v", m)
	assert.Equal(t, []any{"café"}, m["r"])
	r.send(fmt.Sprintf(`{"t":"release","co":%d}`, co))

	r.send("{\"t\":\"checkout\",\"id\":2,\"iface\":\"echo\",\"once\":true,\"m\":\"echo\",\"a\":[\"\xff\"]}")
	m = r.recv()
	assert.Equal(t, "refused", m["t"])
	assert.Equal(t, "invalid_utf8", m["code"])
	assert.EqualValues(t, 2, m["id"])

	r.send("{\"t\":\"ping\",\"id\":3,\"x\":\"\xff\"}")
	m = r.recv()
	assert.Equal(t, "fatal", m["t"])
	assert.Contains(t, m["msg"], "not valid UTF-8")

	// Through pkg/client, only a json.RawMessage can carry such bytes.
	c := newClient(t, d, "echo")
	err := c.Call(ctxT(t), "echo", nil, json.RawMessage("\"\xc3\""))
	require.ErrorIs(t, err, client.ErrProtocol)
	assert.Contains(t, err.Error(), "invalid_utf8")
	var got []string
	require.NoError(t, c.Call(ctxT(t), "echo", &got, "fine"))
	co2, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	defer co2.Release()
	err = co2.Call(ctxT(t), "echo", nil, json.RawMessage("\"\xc3\""))
	require.ErrorIs(t, err, client.ErrProtocol)
	require.NoError(t, co2.Call(ctxT(t), "echo", &got, "still usable"), "the checkout stays usable")
	assert.Equal(t, []string{"still usable"}, got)
}

// TestWorkerNotUTF8IsAProtocolError: a worker's reply that is not valid UTF-8 is not
// relayed: the worker is killed with protocol_error and its caller gets a protocol error.
func TestWorkerNotUTF8IsAProtocolError(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1"))
	c := newClient(t, d, "echo")
	var res json.RawMessage
	err := c.Call(ctxT(t), "badutf8", &res)
	require.ErrorIs(t, err, client.ErrProtocol)
	require.ErrorIs(t, err, client.ErrWorkerLost)
	assert.Contains(t, err.Error(), "not valid UTF-8")
	assert.Empty(t, res)
	require.Eventually(t, func() bool { return status(t, c, "echo").Exits["protocol_error"] == 1 },
		10*time.Second, 10*time.Millisecond)
	var got []string
	require.NoError(t, c.Call(ctxT(t), "echo", &got, "next"), "only that worker was affected")
}
