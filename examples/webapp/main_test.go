package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/taskd-dev/taskd/pkg/client"
	"github.com/taskd-dev/taskd/pkg/taskdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newApp starts a daemon serving examples/sqlite on a fresh database and returns the web
// app's handler in a test server: the way an application tests its handlers against a
// real taskd (pkg/taskdtest) and real workers.
func newApp(t *testing.T) *httptest.Server {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skipf("SKIPPING %s: python3 is not installed, so the sqlite interface cannot run (CI installs it)", t.Name())
	}
	db := filepath.Join(t.TempDir(), "notes.sqlite")
	d := taskdtest.Start(t, taskdtest.Config{Interfaces: map[string]taskdtest.Interface{
		"sqlite": {Command: []string{py, "../sqlite/worker.py"}, Env: map[string]string{"SQLITE_PATH": db}, YAML: "min_idle: 1"},
	}})
	c, err := d.NewClient(client.Config{Interface: "sqlite", KeepWorkerAfterError: true, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	a := &app{c: c, log: zaptest.NewLogger(t), timeout: 20 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, a.migrate(ctx))
	srv := httptest.NewServer(a.routes())
	t.Cleanup(srv.Close)
	return srv
}

func post(t *testing.T, srv *httptest.Server, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(srv.URL+"/notes", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestNotes(t *testing.T) {
	srv := newApp(t)

	code, body := post(t, srv, `{"author":"zoë","body":"hello 😀"}`)
	require.Equal(t, http.StatusCreated, code, body)
	assert.JSONEq(t, `{"id":1,"author_notes":1}`, body)
	code, body = post(t, srv, `{"author":"zoë","body":"second"}`)
	require.Equal(t, http.StatusCreated, code, body)
	assert.JSONEq(t, `{"id":2,"author_notes":2}`, body)

	// The same note again violates UNIQUE: 409, and the transaction's first write is gone.
	code, body = post(t, srv, `{"author":"zoë","body":"second"}`)
	assert.Equal(t, http.StatusConflict, code, body)
	code, body = post(t, srv, `{"author":"zoë","body":"third"}`)
	require.Equal(t, http.StatusCreated, code, body)
	assert.JSONEq(t, `{"id":3,"author_notes":3}`, body, "the failed request's count update was rolled back")

	code, body = post(t, srv, `not json`)
	assert.Equal(t, http.StatusBadRequest, code, body)

	resp, err := http.Get(srv.URL + "/notes?author=zo%C3%AB")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var notes []note
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&notes))
	assert.Equal(t, []note{{1, "zoë", "hello 😀"}, {2, "zoë", "second"}, {3, "zoë", "third"}}, notes)
}

func TestHTTPStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{&client.RemoteError{Type: "IntegrityError", Message: "UNIQUE constraint failed"}, http.StatusConflict},
		{&client.RemoteError{Type: "OperationalError", Message: "no such table"}, http.StatusInternalServerError},
		{fmt.Errorf("checkout: %w", client.ErrOverloaded), http.StatusServiceUnavailable},
		{fmt.Errorf("checkout: %w", client.ErrUnreachable), http.StatusServiceUnavailable},
		{fmt.Errorf("call: %w", context.DeadlineExceeded), http.StatusGatewayTimeout},
		{fmt.Errorf("call: %w", client.ErrCallTimeout), http.StatusBadGateway},
		{client.ErrWorkerLost, http.StatusBadGateway},
		{client.ErrUnknownInterface, http.StatusInternalServerError},
	} {
		got, _ := httpStatus(tc.err)
		assert.Equal(t, tc.want, got, "%v", tc.err)
	}
}

func TestDaemonDown(t *testing.T) {
	c, err := client.New(client.Config{Addr: "unix:" + filepath.Join(t.TempDir(), "none.sock"), Interface: "sqlite"})
	require.NoError(t, err)
	defer c.Close()
	srv := httptest.NewServer((&app{c: c, log: zaptest.NewLogger(t), timeout: 200 * time.Millisecond}).routes())
	defer srv.Close()
	code, body := post(t, srv, `{"author":"a","body":"b"}`)
	assert.Equal(t, http.StatusServiceUnavailable, code, body)
}
