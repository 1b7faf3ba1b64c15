package server_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// tlsDaemon is a real taskd with a unix socket (for admin requests) and a tls:// listener
// on a loopback port, with certificates made for the test.
type tlsDaemon struct {
	*taskdtest.Daemon
	TLSAddr     string // tls://127.0.0.1:PORT
	Port        int
	MetricsPort int
	CA          *taskdtest.CA // signs the server's and the good client's certificates
	ServerCert  string        // the files the config names (rotation overwrites them)
	ServerKey   string
	ClientCert  string // a good client's: SANs app.example.org and spiffe://example.org/app
	ClientKey   string
	head        string // the config file up to its interfaces (listen, log, metrics_listen, tls)
}

// startTLS starts taskd with tls:// on a free loopback port and interface echo; tlsYAML
// is added under the tls key (client_ca_file: the test CA's file unless noClientCA).
func startTLS(t *testing.T, tlsYAML string, noClientCA bool) *tlsDaemon {
	t.Helper()
	return startTLSWith(t, "", tlsYAML, noClientCA, taskdtest.WorkerYAML("echo", "raw", "min_idle: 1"))
}

// startTLSWith is startTLS with more top-level keys top (YAML lines) and the interfaces
// ifaces (YAML under the interfaces key).
func startTLSWith(t *testing.T, top, tlsYAML string, noClientCA bool, ifaces string) *tlsDaemon {
	t.Helper()
	td := &tlsDaemon{CA: taskdtest.NewCA(t, "taskd-test"), Port: freePort(t), MetricsPort: freePort(t)}
	td.TLSAddr = fmt.Sprintf("tls://127.0.0.1:%d", td.Port)
	td.ServerCert, td.ServerKey = td.CA.Issue(t, taskdtest.ServerLeaf("server-1"))
	td.ClientCert, td.ClientKey = td.CA.Issue(t, taskdtest.Leaf{Name: "app", Client: true,
		SANs: []string{"app.example.org", "spiffe://example.org/app"}})
	ca := fmt.Sprintf("  client_ca_file: %q\n", td.CA.CertFile)
	if noClientCA {
		ca = ""
	}
	dir := t.TempDir()
	yaml := fmt.Sprintf("%smetrics_listen: \"127.0.0.1:%d\"\ntls:\n  cert_file: %q\n  key_file: %q\n%s%s\ninterfaces:\n",
		top, td.MetricsPort, td.ServerCert, td.ServerKey, ca, tlsYAML)
	td.Daemon = taskdtest.StartWith(t, yaml+ifaces, taskdtest.Options{Dir: dir, Wait: true,
		Env: []string{"TASKD_LISTEN=unix:" + filepath.Join(dir, "taskd.sock") + "," + td.TLSAddr}})
	file, err := os.ReadFile(td.Config)
	require.NoError(t, err)
	td.head = string(file[:strings.Index(string(file), yaml)+len(yaml)])
	return td
}

// client returns a client of interface echo over TLS with cfg (nil: the client's default).
func (td *tlsDaemon) client(t *testing.T, cfg *tls.Config) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Addr: td.TLSAddr, Interface: "echo", Name: "tls-test", TLS: cfg, Timeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// good is the TLS config of a client that trusts the test CA and presents a good certificate.
func (td *tlsDaemon) good(t *testing.T) *tls.Config {
	return taskdtest.ClientTLS(t, td.CA, td.ClientCert, td.ClientKey)
}

// serverCN dials the TLS port with cfg and returns the common name of the certificate taskd
// presented, and the TLS version negotiated.
func serverCN(t *testing.T, addr string, cfg *tls.Config) (string, uint16) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", strings.TrimPrefix(addr, "tls://"), cfg)
	require.NoError(t, err)
	defer conn.Close()
	st := conn.ConnectionState()
	return st.PeerCertificates[0].Subject.CommonName, st.Version
}

// TestTLSMutualAuth: on a tls:// listener with client_ca_file, a client with a certificate
// of that CA is served and known by its certificate's names; one without a certificate, or
// with one of another CA, is refused; a client that does not trust taskd's certificate
// gets a clear error; a plaintext client gets a clean close; a silent one holds up no
// one; and the daemon serves on through all of it.
func TestTLSMutualAuth(t *testing.T) {
	td := startTLS(t, "", false)
	good := td.client(t, td.good(t))
	works := func(t *testing.T) {
		t.Helper()
		var got []string
		require.NoError(t, good.Call(ctxT(t), "echo", &got, "hi"))
		assert.Equal(t, []string{"hi"}, got)
	}

	t.Run("good client is served, TLS 1.3, known by its certificate's names", func(t *testing.T) {
		works(t)
		co, err := good.Checkout(ctxT(t))
		require.NoError(t, err)
		defer co.Release()
		list, err := good.Checkouts(ctxT(t), "echo")
		require.NoError(t, err)
		require.Len(t, list, 1)
		assert.Equal(t, []string{"app.example.org", "spiffe://example.org/app"}, list[0].Holder.TLSNames)
		assert.Equal(t, "tls-test", list[0].Holder.Name)
		assert.Contains(t, list[0].Holder.Addr, "127.0.0.1:")
		assert.Equal(t, -1, list[0].Holder.UID)
		cn, version := serverCN(t, td.TLSAddr, td.good(t))
		assert.Equal(t, "server-1", cn)
		assert.Equal(t, uint16(tls.VersionTLS13), version, "TLS 1.3 is negotiated when both sides have it")
		_, err = good.Drain(ctxT(t), "echo")
		assert.ErrorIs(t, err, client.ErrNotPermitted, "a TLS peer is not admin")
	})

	t.Run("no client certificate is refused", func(t *testing.T) {
		_, err := td.client(t, taskdtest.ClientTLS(t, td.CA, "", "")).Ping(ctxT(t))
		require.ErrorIs(t, err, client.ErrUnreachable)
		assert.Contains(t, err.Error(), "taskd refused the TLS handshake")
		assert.Contains(t, err.Error(), "Config.TLS.Certificates")
		works(t)
	})

	t.Run("certificate of another CA is refused", func(t *testing.T) {
		other := taskdtest.NewCA(t, "other")
		cert, key := other.Issue(t, taskdtest.Leaf{Name: "intruder", Client: true, SANs: []string{"app.example.org"}})
		cfg := taskdtest.ClientTLS(t, td.CA, cert, key) // trusts taskd, but taskd does not trust it
		_, err := td.client(t, cfg).Ping(ctxT(t))
		require.ErrorIs(t, err, client.ErrUnreachable)
		assert.Contains(t, err.Error(), "taskd refused the TLS handshake")
		works(t)
	})

	t.Run("server certificate not trusted by the client", func(t *testing.T) {
		other := taskdtest.NewCA(t, "other")
		cfg := taskdtest.ClientTLS(t, other, td.ClientCert, td.ClientKey)
		_, err := td.client(t, cfg).Ping(ctxT(t))
		require.ErrorIs(t, err, client.ErrUnreachable)
		var unknown x509.UnknownAuthorityError
		assert.ErrorAs(t, err, &unknown)
		assert.Contains(t, err.Error(), "taskd's certificate is not trusted: set Config.TLS.RootCAs")

		_, err = td.client(t, nil).Ping(ctxT(t)) // the default: the system's roots
		assert.ErrorAs(t, err, &unknown)

		cfg = td.good(t)
		cfg.ServerName = "elsewhere.example.org"
		_, err = td.client(t, cfg).Ping(ctxT(t))
		var host x509.HostnameError
		assert.ErrorAs(t, err, &host)
		assert.Contains(t, err.Error(), "not valid for the name dialled: set Config.TLS.ServerName")
		works(t)
	})

	t.Run("plaintext client gets a clean close", func(t *testing.T) {
		// The client protocol in plaintext: a fatal message that says why, then EOF.
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", td.Port), 5*time.Second)
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
		_, err = conn.Write([]byte(`{"t":"hello","name":"plain"}` + "\n" + `{"t":"ping","id":1}` + "\n"))
		require.NoError(t, err)
		r := bufio.NewReader(conn)
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		assert.Contains(t, line, `"t":"fatal"`)
		assert.Contains(t, line, "this is a TLS port of taskd")
		_, err = r.ReadByte()
		assert.ErrorIs(t, err, io.EOF, "then a clean close")

		// pkg/client on tcp:// shows taskd's message.
		c, err := client.New(client.Config{Addr: fmt.Sprintf("tcp://127.0.0.1:%d", td.Port), Timeout: 5 * time.Second})
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Ping(ctxT(t))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "this is a TLS port of taskd")

		// Anything else that is not TLS: closed.
		conn2, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", td.Port), 5*time.Second)
		require.NoError(t, err)
		defer conn2.Close()
		require.NoError(t, conn2.SetDeadline(time.Now().Add(10*time.Second)))
		_, err = conn2.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		require.NoError(t, err)
		n, err := conn2.Read(make([]byte, 100))
		assert.Zero(t, n)
		assert.Error(t, err)
		works(t)
	})

	t.Run("a silent client holds up no one", func(t *testing.T) {
		var silent []net.Conn
		for range 5 {
			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", td.Port), 5*time.Second)
			require.NoError(t, err)
			defer conn.Close()
			silent = append(silent, conn)
		}
		fresh := td.client(t, td.good(t)) // a new connection, handshaken meanwhile
		start := time.Now()
		_, err := fresh.Ping(ctxT(t))
		require.NoError(t, err)
		assert.Less(t, time.Since(start), 3*time.Second)
	})

	t.Run("failures are counted", func(t *testing.T) {
		s := getMetrics(t, td.MetricsPort)
		for _, reason := range []string{"not_tls", "client_cert", "refused_by_client"} {
			assert.Regexp(t, `taskd_tls_handshake_failures_total\{reason="`+reason+`"\} [1-9]`, s.text)
		}
		assert.Regexp(t, `taskd_tls_certificate_expiry_timestamp_seconds \d`, s.text)
		assert.Contains(t, td.Logs(), "TLS handshake failed")
	})
}

// TestTLSRotationByReload: a reload reads the certificate files again: new connections get
// the new certificate (and client CA), while a checkout held over TLS keeps working on its
// connection; a reload whose files do not load is refused and the certificate in use stays.
func TestTLSRotationByReload(t *testing.T) {
	td := startTLS(t, "", false)
	c := td.client(t, td.good(t))
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	defer co.Release()
	before := pid(t, co)
	cn, _ := serverCN(t, td.TLSAddr, td.good(t))
	require.Equal(t, "server-1", cn)

	// Rotate: a new certificate in the same files, then a reload over the unix socket.
	cert2, key2 := td.CA.Issue(t, taskdtest.ServerLeaf("server-2"))
	copyFile(t, cert2, td.ServerCert)
	copyFile(t, key2, td.ServerKey)
	admin := newClient(t, td.Daemon, "")
	rep, err := admin.Reload(ctxT(t))
	require.NoError(t, err)
	assert.Empty(t, rep.NeedsRestart)

	cn, _ = serverCN(t, td.TLSAddr, td.good(t))
	assert.Equal(t, "server-2", cn, "a new connection gets the new certificate")
	assert.Equal(t, before, pid(t, co), "the held checkout works on, on the same worker")
	var got []string
	require.NoError(t, td.client(t, td.good(t)).Call(ctxT(t), "echo", &got, "new"))

	// Broken files: the reload is refused, naming the key; the certificate in use stays.
	require.NoError(t, os.WriteFile(td.ServerKey, []byte("not a key\n"), 0o600))
	_, err = admin.Reload(ctxT(t))
	require.ErrorIs(t, err, client.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "tls.key_file")
	cn, _ = serverCN(t, td.TLSAddr, td.good(t))
	assert.Equal(t, "server-2", cn)
	assert.Equal(t, before, pid(t, co))

	// SIGHUP does the same once the files are good again.
	cert3, key3 := td.CA.Issue(t, taskdtest.ServerLeaf("server-3"))
	copyFile(t, cert3, td.ServerCert)
	copyFile(t, key3, td.ServerKey)
	require.NoError(t, td.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool {
		cn, _ := serverCN(t, td.TLSAddr, td.good(t))
		return cn == "server-3"
	}, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, before, pid(t, co))

	// The client CA is read again too: clients of a CA dropped by a reload are refused
	// from then on, those of the new one served.
	next := taskdtest.NewCA(t, "next")
	nextCert, nextKey := next.Issue(t, taskdtest.Leaf{Name: "next-app", Client: true, SANs: []string{"spiffe://example.org/next"}})
	copyFile(t, next.CertFile, td.CA.CertFile)
	_, err = admin.Reload(ctxT(t))
	require.NoError(t, err)
	_, err = td.client(t, td.good(t)).Ping(ctxT(t))
	assert.ErrorContains(t, err, "taskd refused the TLS handshake")
	_, err = td.client(t, taskdtest.ClientTLS(t, td.CA, nextCert, nextKey)).Ping(ctxT(t))
	require.NoError(t, err)
	assert.Equal(t, before, pid(t, co), "the held checkout works on")
}

// TestTLSMinVersion: with min_version 1.3 a TLS 1.2 client is refused; without
// client_ca_file no client certificate is asked for, and the peer has no TLS names.
func TestTLSMinVersion(t *testing.T) {
	td := startTLS(t, "  min_version: \"1.3\"\n", true)
	old := taskdtest.ClientTLS(t, td.CA, "", "")
	old.MaxVersion = tls.VersionTLS12
	_, err := td.client(t, old).Ping(ctxT(t))
	require.ErrorIs(t, err, client.ErrUnreachable)
	assert.Contains(t, err.Error(), "protocol version")

	c := td.client(t, taskdtest.ClientTLS(t, td.CA, "", ""))
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	defer co.Release()
	list, err := c.Checkouts(ctxT(t), "echo")
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Nil(t, list[0].Holder.TLSNames, "no client certificate asked for")
	assert.Regexp(t, `taskd_tls_handshake_failures_total\{reason="version"\} 1`, getMetrics(t, td.MetricsPort).text)
}

// TestTLSSocketActivation: a TCP socket passed by systemd for a tls:// address is served
// with TLS.
func TestTLSSocketActivation(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f, err := ln.(*net.TCPListener).File()
	require.NoError(t, err)
	ln.Close()
	fd, err := syscall.Dup(int(f.Fd()))
	require.NoError(t, err)
	f.Close()
	sock := os.NewFile(uintptr(fd), "taskd-tls") // a name without ':' for LISTEN_FDNAMES
	t.Cleanup(func() { sock.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	ca := taskdtest.NewCA(t, "act")
	cert, key := ca.Issue(t, taskdtest.ServerLeaf("activated"))
	dir := t.TempDir()
	addr := fmt.Sprintf("tls://127.0.0.1:%d", port)
	d := taskdtest.StartWith(t, fmt.Sprintf("tls: {cert_file: %q, key_file: %q}\ninterfaces:\n%s", cert, key,
		taskdtest.WorkerYAML("echo", "raw", "min_idle: 0")), taskdtest.Options{Dir: dir, Wait: true, Sockets: []*os.File{sock},
		Env: []string{"TASKD_LISTEN=unix:" + filepath.Join(dir, "taskd.sock") + "," + addr}})
	assert.Contains(t, d.Logs(), "using the socket passed by systemd")
	cn, _ := serverCN(t, addr, taskdtest.ClientTLS(t, ca, "", ""))
	assert.Equal(t, "activated", cn)
	c, err := client.New(client.Config{Addr: addr, Interface: "echo", TLS: taskdtest.ClientTLS(t, ca, "", ""), Timeout: 10 * time.Second})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Call(ctxT(t), "echo", nil))
}

// TestTLSCheckConfig: taskd --check-config explains a bad tls setting with its key path.
func TestTLSCheckConfig(t *testing.T) {
	ca := taskdtest.NewCA(t, "check")
	cert, _ := ca.Issue(t, taskdtest.ServerLeaf("a"))
	_, otherKey := ca.Issue(t, taskdtest.ServerLeaf("b"))
	cfg := filepath.Join(t.TempDir(), "taskd.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf("listen: [\"tls://0.0.0.0:7443\"]\ntls:\n  cert_file: %q\n  key_file: %q\ninterfaces:\n%s",
		cert, otherKey, taskdtest.WorkerYAML("echo", "raw", "min_idle: 0"))), 0o644))
	out, err := exec.Command(taskdtest.Binary(t, "cmd/taskd"), "--check-config", "-c", cfg).CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "line 4: tls.key_file: tls: private key does not match public key")

	require.NoError(t, os.WriteFile(cfg, []byte("listen: [\"tls://0.0.0.0:7443\"]\ninterfaces:\n"+
		taskdtest.WorkerYAML("echo", "raw", "min_idle: 0")), 0o644))
	out, err = exec.Command(taskdtest.Binary(t, "cmd/taskd"), "--check-config", "-c", cfg).CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "tls: listen has a tls:// address, which needs taskd's certificate")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, 0o600))
}

// TestTLSNamesAllow: over mTLS, an interface's allow.tls_names admits the clients whose
// verified certificate carries a listed SAN, a DNS name or a URI (a SPIFFE ID), and no
// other; a refusal is ErrForbidden naming the interface and the peer by its certificate,
// logged once per peer and interface and counted. A unix socket client of the same
// daemon is judged by its uid, never by tls_names, and a TLS client never by a uid. A
// reload that changes only allow is reported as such, and applies to open connections.
func TestTLSNamesAllow(t *testing.T) {
	me := os.Getuid()
	ifaces := func(appAllow string) string {
		return echoIface("byname", `allow: {tls_names: ["web.example.org"]}`) +
			echoIface("byspiffe", `allow: {tls_names: [`+appAllow+`]}`) +
			echoIface("mixed", fmt.Sprintf(`allow: {tls_names: ["spiffe://example.org/app"], uids: [%d]}`, me))
	}
	td := startTLSWith(t, "", "", false, ifaces(`"spiffe://example.org/app"`))
	issue := func(name string, sans ...string) *tls.Config {
		cert, key := td.CA.Issue(t, taskdtest.Leaf{Name: name, Client: true, SANs: sans})
		return taskdtest.ClientTLS(t, td.CA, cert, key)
	}
	web := issue("web", "web.example.org")                                                 // a DNS name only
	app := issue("app-only", "spiffe://example.org/app")                                   // a URI only
	intruder := issue("intruder", "intruder.example.org", "spiffe://example.org/intruder") // same CA, other names
	tlsClient := func(cfg *tls.Config, iface string) *client.Client {
		c, err := client.New(client.Config{Addr: td.TLSAddr, Interface: iface, TLS: cfg, Name: "names-test", Timeout: 10 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	// use checks out iface (a held checkout, then a one-shot call) and returns the error.
	use := func(c *client.Client) error {
		co, err := c.Checkout(ctxT(t))
		if err != nil {
			return err
		}
		var got []string
		err = co.Call(ctxT(t), "echo", &got, "held")
		co.Release()
		if err != nil {
			return err
		}
		return c.Call(ctxT(t), "echo", &got, "one-shot")
	}
	forbidden := func(t *testing.T, err error, iface, who string) {
		t.Helper()
		require.ErrorIs(t, err, client.ErrForbidden)
		assert.Contains(t, err.Error(), fmt.Sprintf("checkout of %q", iface))
		assert.Contains(t, err.Error(), fmt.Sprintf(`interface \"%s\" may not be used by %s`, iface, who), "taskd names the interface and the peer")
	}

	t.Run("a listed SAN is allowed: DNS name and URI", func(t *testing.T) {
		require.NoError(t, use(tlsClient(web, "byname")))
		require.NoError(t, use(tlsClient(app, "byspiffe")))
		require.NoError(t, use(tlsClient(app, "mixed")))
	})

	t.Run("another name is forbidden", func(t *testing.T) {
		forbidden(t, use(tlsClient(web, "byspiffe")), "byspiffe", "TLS client web.example.org at 127.0.0.1:")
		forbidden(t, use(tlsClient(app, "byname")), "byname", "TLS client spiffe://example.org/app at 127.0.0.1:")
		c := tlsClient(intruder, "byspiffe")
		err := use(c)
		forbidden(t, err, "byspiffe", "TLS client intruder.example.org, spiffe://example.org/intruder at 127.0.0.1:")
		assert.Contains(t, err.Error(), "allow.tls_names lists", "says what would let it in")
		forbidden(t, use(c), "byspiffe", "TLS client intruder.example.org")
		// mixed also lists this process's uid: a TLS client has no uid, whoever runs it.
		forbidden(t, use(tlsClient(intruder, "mixed")), "mixed", "TLS client intruder.example.org")

		logs := td.Logs()
		assert.Equal(t, 1, strings.Count(logs, `"interface":"byspiffe","who":"TLS client intruder.example.org, spiffe://example.org/intruder`),
			"a refusal is logged once per peer and interface")
		assert.Regexp(t, `taskd_checkouts_forbidden_total\{interface="byspiffe"\} 3\b`, getMetrics(t, td.MetricsPort).text)
	})

	t.Run("a unix socket client is judged by its uid, not by tls_names", func(t *testing.T) {
		err := use(newClient(t, td.Daemon, "byspiffe"))
		forbidden(t, err, "byspiffe", fmt.Sprintf("uid %d", me))
		assert.Contains(t, err.Error(), "run the program as an allowed user")
		require.NoError(t, use(newClient(t, td.Daemon, "mixed")), "mixed names this uid")
	})

	t.Run("a reload that changes only allow", func(t *testing.T) {
		open := tlsClient(intruder, "byspiffe") // connected before the reload
		forbidden(t, use(open), "byspiffe", "TLS client intruder.example.org")
		require.NoError(t, os.WriteFile(td.Config, []byte(td.head+
			ifaces(`"spiffe://example.org/app", "spiffe://example.org/intruder"`)), 0o600))
		rep, err := newClient(t, td.Daemon, "").Reload(ctxT(t))
		require.NoError(t, err)
		assert.Equal(t, client.InterfaceChange{Name: "byspiffe", Change: client.ChangeAccess, Keys: []string{"allow"}, Generation: 1},
			change(t, rep, "byspiffe"))
		assert.Equal(t, client.ChangeUnchanged, change(t, rep, "byname").Change)
		assert.Empty(t, rep.Live)
		require.NoError(t, use(open), "the new rule applies to the open connection's next checkout")
		require.NoError(t, use(tlsClient(app, "byspiffe")))
		forbidden(t, use(tlsClient(web, "byspiffe")), "byspiffe", "TLS client web.example.org")
	})
}
