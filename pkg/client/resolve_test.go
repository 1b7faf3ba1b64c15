package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

// testDNS is a tiny DNS server for the tests, on a loopback UDP port: it answers every A
// question with the addresses it is given (Set), every SRV question with srv, and every
// other question with no records. It understands just enough of RFC 1035 for Go's
// resolver.
type testDNS struct {
	pc net.PacketConn
	wg sync.WaitGroup

	mu  sync.Mutex
	a   []net.IP
	srv []srvRecord
}

type srvRecord struct {
	port   uint16
	target string
}

func startDNS(t *testing.T) *testDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &testDNS{pc: pc}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		pc.Close()
		s.wg.Wait()
	})
	return s
}

// Set makes the A records ips.
func (s *testDNS) Set(ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.a = nil
	for _, ip := range ips {
		s.a = append(s.a, net.ParseIP(ip).To4())
	}
}

// Resolver returns a resolver that asks s and nobody else.
func (s *testDNS) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", s.pc.LocalAddr().String())
	}}
}

func (s *testDNS) serve() {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if out := s.answer(buf[:n]); out != nil {
			s.pc.WriteTo(out, from)
		}
	}
}

// answer builds the answer to query q, or nil if q is not a query it understands.
func (s *testDNS) answer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	i := 12
	for i < len(q) && q[i] != 0 { // the question's name
		i += int(q[i]) + 1
	}
	if i+5 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i+1:])
	question := q[12 : i+5]
	s.mu.Lock()
	a, srv := slices.Clone(s.a), slices.Clone(s.srv)
	s.mu.Unlock()

	out := append([]byte(nil), q[:2]...)        // id
	out = append(out, 0x81, 0x80)               // a response; recursion desired and available; no error
	out = binary.BigEndian.AppendUint16(out, 1) // one question
	var answers []byte
	count := 0
	switch qtype {
	case 1: // A
		for _, ip := range a {
			answers = append(answers, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4) // the question's name, A, IN, TTL 1s
			answers = append(answers, ip...)
			count++
		}
	case 33: // SRV
		for _, r := range srv {
			var target []byte
			for _, l := range strings.Split(strings.TrimSuffix(r.target, "."), ".") {
				target = append(append(target, byte(len(l))), l...)
			}
			target = append(target, 0)
			answers = append(answers, 0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 1)
			answers = binary.BigEndian.AppendUint16(answers, uint16(6+len(target)))
			answers = append(answers, 0, 1, 0, 1) // priority, weight
			answers = binary.BigEndian.AppendUint16(answers, r.port)
			answers = append(answers, target...)
			count++
		}
	}
	out = binary.BigEndian.AppendUint16(out, uint16(count))
	out = append(out, 0, 0, 0, 0) // no authority, no additional records
	out = append(out, question...)
	return append(out, answers...)
}

// tcpDaemon starts a daemon of the multi tests that also listens on tcp://ip:port (handed
// to it as systemd's socket activation would).
func tcpDaemon(t *testing.T, ip string, port int) *taskdtest.Daemon {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
	require.NoError(t, err)
	f, err := ln.(*net.TCPListener).File()
	require.NoError(t, err)
	ln.Close()
	defer f.Close() // once taskd has it: a daemon killed later leaves no listener behind
	return taskdtest.StartWith(t, multiYAML(t), taskdtest.Options{Wait: true, Sockets: []*os.File{f}})
}

// freePort returns a TCP port free on 127.0.0.2 and 127.0.0.3 (at the time of asking).
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.2:0")
		require.NoError(t, err)
		port := ln.Addr().(*net.TCPAddr).Port
		ln2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.3:%d", port))
		ln.Close()
		if err == nil {
			ln2.Close()
			return port
		}
	}
	t.Fatal("no port free on both 127.0.0.2 and 127.0.0.3")
	return 0
}

// TestMultiDNS: a dns:// address, resolved through a test DNS server, picks up a daemon
// added later, and drains one that vanished: its held checkout finishes, then it is
// closed and forgotten.
func TestMultiDNS(t *testing.T) {
	dns := startDNS(t)
	port := freePort(t)
	d1 := tcpDaemon(t, "127.0.0.2", port)
	dns.Set("127.0.0.2")
	c := newClient(t, Config{Interface: "echo", Addrs: []string{fmt.Sprintf("dns://taskd.test:%d", port)},
		Resolver: dns.Resolver(), ResolveEvery: time.Millisecond}) // raised to MinResolveEvery
	ctx := context.Background()
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	assert.Contains(t, d1.Workers(), co.Worker().PID)
	co.Release()
	addr1 := fmt.Sprintf("tcp://127.0.0.2:%d", port)
	addr2 := fmt.Sprintf("tcp://127.0.0.3:%d", port)
	require.Equal(t, addr1, c.Stats().Daemons[0].Addr)

	d2 := tcpDaemon(t, "127.0.0.3", port)
	dns.Set("127.0.0.2", "127.0.0.3")
	require.Eventually(t, func() bool { return len(c.Stats().Daemons) == 2 }, 10*time.Second, 10*time.Millisecond, "the new address is picked up")
	assert.Equal(t, addr2, c.Stats().Daemons[1].Addr)
	// Both serve: with the first one held, the balancer prefers the second.
	held, err := c.Checkout(ctx)
	require.NoError(t, err)
	next, err := c.Checkout(ctx)
	require.NoError(t, err)
	assert.ElementsMatch(t, []int{0, 1}, []int{daemonOf([]*taskdtest.Daemon{d1, d2}, held.Worker().PID), daemonOf([]*taskdtest.Daemon{d1, d2}, next.Worker().PID)})
	next.Release()
	if daemonOf([]*taskdtest.Daemon{d1, d2}, held.Worker().PID) != 0 {
		held.Release()
		held = holdOn(t, c, []*taskdtest.Daemon{d1, d2}, []int{1, 0})[0][0]
	}

	// 127.0.0.2 vanishes while a checkout is held there: new checkouts go to the other,
	// the held one finishes, and then the daemon is closed and dropped.
	dns.Set("127.0.0.3")
	require.Eventually(t, func() bool { return c.Stats().Daemons[0].Vanished }, 10*time.Second, 10*time.Millisecond)
	for range 10 {
		co, err := c.Checkout(ctx)
		require.NoError(t, err)
		assert.Contains(t, d2.Workers(), co.Worker().PID, "a checkout on a vanished daemon")
		co.Release()
	}
	var r []any
	require.NoError(t, held.Call(ctx, "echo", &r, "still served"))
	held.Release()
	require.Eventually(t, func() bool {
		st := c.Stats()
		return len(st.Daemons) == 1 && st.Daemons[0].Addr == addr2
	}, 10*time.Second, 10*time.Millisecond, "the vanished daemon is dropped once idle")
}

// TestMultiResolveOnFailure: a daemon that cannot be reached makes the Client resolve its
// names again at once (not waiting for ResolveEvery), so that a checkout finds the daemon
// that replaced it within its deadline.
func TestMultiResolveOnFailure(t *testing.T) {
	dns := startDNS(t)
	port := freePort(t)
	d1 := tcpDaemon(t, "127.0.0.2", port)
	dns.Set("127.0.0.2")
	c := newClient(t, Config{Interface: "echo", Addrs: []string{fmt.Sprintf("dns://taskd.test:%d", port)},
		Resolver: dns.Resolver(), ResolveEvery: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	co.Release()

	d2 := tcpDaemon(t, "127.0.0.3", port)
	dns.Set("127.0.0.3")
	require.NoError(t, d1.Signal(syscall.SIGKILL))
	<-d1.Exited()
	co, err = c.Checkout(ctx)
	require.NoError(t, err)
	assert.Contains(t, d2.Workers(), co.Worker().PID)
	co.Release()
	for _, row := range c.Stats().Daemons { // the killed one is vanished, or dropped already
		assert.True(t, row.Addr == fmt.Sprintf("tcp://127.0.0.3:%d", port) || row.Vanished, "%+v", row)
	}
}

// TestMultiSRV: a dns+srv:// address names daemons by SRV records (target and port),
// whose targets are resolved by the same resolver.
func TestMultiSRV(t *testing.T) {
	dns := startDNS(t)
	port := freePort(t)
	d := tcpDaemon(t, "127.0.0.2", port)
	dns.Set("127.0.0.2")
	dns.mu.Lock()
	dns.srv = []srvRecord{{port: uint16(port), target: "pod-0.taskd.test."}}
	dns.mu.Unlock()
	c := newClient(t, Config{Interface: "echo", Addrs: []string{"dns+srv://_taskd._tcp.taskd.test"}, Resolver: dns.Resolver()})
	co, err := c.Checkout(context.Background())
	require.NoError(t, err)
	assert.Contains(t, d.Workers(), co.Worker().PID)
	co.Release()
	assert.Equal(t, fmt.Sprintf("tcp://127.0.0.2:%d", port), c.Stats().Daemons[0].Addr)
}

// TestMultiNoneResolved: a name with no records yet leaves checkouts waiting until their
// deadline, with an error that says no daemon was found.
func TestMultiNoneResolved(t *testing.T) {
	dns := startDNS(t)
	c := newClient(t, Config{Interface: "echo", Addrs: []string{"dns://taskd.test:1"}, Resolver: dns.Resolver()})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Checkout(ctx)
	require.ErrorIs(t, err, ErrUnreachable)
	require.True(t, errors.Is(err, context.DeadlineExceeded), "%v", err)
	assert.Contains(t, err.Error(), "no daemon found")
}
