package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// TestTLSFlagErrors: --tls-* flags that cannot work are refused with a clear error before
// anything is dialled.
func TestTLSFlagErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--addr", "unix:/x.sock", "--tls-ca", missing, "ping"}, 2,
			`--tls-ca: only a tls:// address uses TLS, and the address is "unix:/x.sock"; give --addr tls://HOST:PORT`},
		{[]string{"--addr", "tls://127.0.0.1:1", "--tls-cert", missing, "ping"}, 2, "--tls-cert is given without --tls-key"},
		{[]string{"--addr", "tls://127.0.0.1:1", "--tls-key", missing, "ping"}, 2, "--tls-key is given without --tls-cert"},
		{[]string{"--addr", "tls://127.0.0.1:1", "--tls-ca", missing, "ping"}, 1,
			"--tls-ca: open " + missing + ": no such file or directory; give the PEM file of the CA that signed taskd's certificate"},
		{[]string{"--addr", "tls://127.0.0.1:1", "--tls-cert", missing, "--tls-key", missing, "ping"}, 1,
			"--tls-cert, --tls-key: open " + missing + ": no such file or directory; give a PEM client certificate and its private key"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb)
		assert.Equal(t, tc.code, code, "%v: %s", tc.args, errb.String())
		assert.Contains(t, errb.String(), tc.msg, "%v", tc.args)
	}
	t.Setenv("TASKD_TLS_CA", missing)
	var out, errb bytes.Buffer
	assert.Equal(t, exitError, run(context.Background(), []string{"--addr", "tls://127.0.0.1:1", "ping"}, &out, &errb))
	assert.Contains(t, errb.String(), "--tls-ca (from $TASKD_TLS_CA): open "+missing)
	errb.Reset()
	dir := t.TempDir()
	assert.Equal(t, exitError, run(context.Background(), []string{"--addr", "unix:" + filepath.Join(dir, "none.sock"), "ping"}, &out, &errb))
	assert.Contains(t, errb.String(), "taskd unreachable", "the variables are ignored for an address that is not tls://")
}

// TestTLSRealDaemon: taskctl talks to a real taskd's tls:// listener with client
// certificates required, given by flags or by the environment, and `taskctl checkouts`
// shows the TLS names of a checkout's holder.
func TestTLSRealDaemon(t *testing.T) {
	ca := taskdtest.NewCA(t, "ctl")
	srvCert, srvKey := ca.Issue(t, taskdtest.ServerLeaf("srv"))
	cliCert, cliKey := ca.Issue(t, taskdtest.Leaf{Name: "ops", Client: true, SANs: []string{"spiffe://example.org/ops"}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	addr := fmt.Sprintf("tls://127.0.0.1:%d", port)
	dir := t.TempDir()
	taskdtest.StartWith(t, fmt.Sprintf("tls: {cert_file: %q, key_file: %q, client_ca_file: %q}\ninterfaces:\n%s",
		srvCert, srvKey, ca.CertFile, taskdtest.WorkerYAML("echo", "raw", "min_idle: 1")),
		taskdtest.Options{Dir: dir, Wait: true, Env: []string{"TASKD_LISTEN=unix:" + filepath.Join(dir, "taskd.sock") + "," + addr}})

	taskctl := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"--addr", addr, "--timeout", "5s"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := taskctl("--tls-ca", ca.CertFile, "--tls-cert", cliCert, "--tls-key", cliKey, "call", "echo", "echo", "over-tls")
	require.Equal(t, exitOK, code, errs)
	assert.Contains(t, out, "over-tls")

	// A checkout held over TLS by an application; taskctl (by the environment) sees its names.
	c, err := client.New(client.Config{Addr: addr, Interface: "echo", Name: "app", TLS: taskdtest.ClientTLS(t, ca, cliCert, cliKey)})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	defer co.Release()
	t.Setenv("TASKD_TLS_CA", ca.CertFile)
	t.Setenv("TASKD_TLS_CERT", cliCert)
	t.Setenv("TASKD_TLS_KEY", cliKey)
	t.Setenv("TASKD_TLS_SERVER_NAME", "localhost")
	code, out, errs = taskctl("checkouts")
	require.Equal(t, exitOK, code, errs)
	assert.Regexp(t, `(?m)^\s+\d+\s+echo\s+echo-\d+\s+\d+\s+app \(spiffe://example.org/ops\)\s+127.0.0.1:\d+\s+-\s`, out)

	// Without a client certificate: refused, and taskctl says what to give.
	t.Setenv("TASKD_TLS_CERT", "")
	t.Setenv("TASKD_TLS_KEY", "")
	code, _, errs = taskctl("ping")
	assert.Equal(t, exitError, code)
	assert.Contains(t, errs, "taskd refused the TLS handshake")
	assert.Contains(t, errs, "taskctl --tls-cert and --tls-key")
	// Not trusting taskd's certificate: the system's roots do not have the test CA.
	t.Setenv("TASKD_TLS_CA", "")
	code, _, errs = taskctl("--tls-cert", cliCert, "--tls-key", cliKey, "ping")
	assert.Equal(t, exitError, code)
	assert.Contains(t, errs, "taskd's certificate is not trusted")
}
