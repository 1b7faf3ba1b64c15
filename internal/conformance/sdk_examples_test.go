package conformance_test

// The example interfaces of configs/taskd.yaml (examples/sqlite, passwd-py, perl-text),
// run through a real daemon.

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// sdkExample starts a daemon whose interface name runs the example script (relative to the
// repository root) with the interpreter, with extra interface keys.
func sdkExample(t *testing.T, name, interp, script, extra string) *client.Client {
	t.Helper()
	yaml := fmt.Sprintf("interfaces:\n  %s:\n    command: [%q, %q]\n", name, interpreter(t, interp), filepath.Join(taskdtest.RepoRoot(), script))
	for _, line := range strings.Split(strings.TrimSpace(extra), "\n") {
		yaml += "    " + strings.TrimSpace(line) + "\n"
	}
	d := taskdtest.Start(t, yaml)
	return newClient(t, d, func(c *client.Config) { c.Interface = name })
}

func TestSQLiteExample(t *testing.T) {
	db := filepath.Join(t.TempDir(), "test.sqlite")
	c := sdkExample(t, "sqlite", "python3", "examples/sqlite/worker.py",
		fmt.Sprintf("env: {SQLITE_PATH: %q}\nmin_idle: 2\nmax_workers: 2", db))
	ctx := ctxT(t)
	require.NoError(t, c.Call(ctx, "execute", nil, "CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER)"))

	count := func(t *testing.T, co *client.Checkout, k string) int {
		t.Helper()
		var rows []struct{ N int }
		require.NoError(t, co.Call(ctx, "query", &rows, "SELECT count(*) AS n FROM kv WHERE k LIKE ?", []any{k}))
		require.Len(t, rows, 1)
		return rows[0].N
	}
	inTx := func(t *testing.T, co *client.Checkout) bool {
		t.Helper()
		var b bool
		require.NoError(t, co.Call(ctx, "in_transaction", &b))
		return b
	}
	checkout := func(t *testing.T) *client.Checkout {
		t.Helper()
		co, err := c.Checkout(ctx)
		require.NoError(t, err)
		t.Cleanup(co.Release)
		return co
	}

	t.Run("a transaction spans calls of one checkout", func(t *testing.T) {
		co := checkout(t)
		require.NoError(t, co.Call(ctx, "begin", nil))
		var n int
		require.NoError(t, co.Call(ctx, "execute", &n, "INSERT INTO kv VALUES (?, ?)", []any{"span-a", 1}))
		assert.Equal(t, 1, n, "rowcount")
		require.NoError(t, co.Call(ctx, "execute", nil, "INSERT INTO kv VALUES (:k, :v)", map[string]any{"k": "span-b", "v": 2}))
		assert.True(t, inTx(t, co), "still in the transaction after two calls")
		assert.Equal(t, 2, count(t, co, "span-%"), "the transaction sees its own writes")
		require.NoError(t, co.Call(ctx, "commit", nil))
		assert.False(t, inTx(t, co))
		co.Release()

		var rows []struct {
			K string
			V int64
		}
		require.NoError(t, c.Call(ctx, "query", &rows, "SELECT k, v FROM kv WHERE k LIKE 'span-%' ORDER BY k"))
		assert.Equal(t, []struct {
			K string
			V int64
		}{{"span-a", 1}, {"span-b", 2}}, rows, "committed: visible to any checkout")
	})

	t.Run("a released checkout's uncommitted work is rolled back", func(t *testing.T) {
		co := checkout(t)
		pid := co.Worker().PID
		require.NoError(t, co.Call(ctx, "begin", nil))
		require.NoError(t, co.Call(ctx, "execute", nil, "INSERT INTO kv VALUES ('left-open', 1)"))
		co.Release() // no commit

		// Check out both workers, and look from the one that ran the transaction.
		a, b := checkout(t), checkout(t)
		same := a
		if b.Worker().PID == pid {
			same = b
		}
		require.Equal(t, pid, same.Worker().PID, "the worker was kept (not retired) and is checked out again")
		assert.False(t, inTx(t, same), "checkout-done closed the transaction")
		assert.Equal(t, 0, count(t, same, "left-open"), "rolled back")
		// Nobody holds the write lock any more: both workers can write.
		require.NoError(t, a.Call(ctx, "execute", nil, "INSERT INTO kv VALUES ('after-a', 1)"))
		require.NoError(t, b.Call(ctx, "execute", nil, "INSERT INTO kv VALUES ('after-b', 1)"))
	})

	t.Run("concurrent checkouts are isolated", func(t *testing.T) {
		writer, reader := checkout(t), checkout(t)
		require.NotEqual(t, writer.Worker().PID, reader.Worker().PID)
		require.NoError(t, writer.Call(ctx, "begin", nil))
		require.NoError(t, writer.Call(ctx, "execute", nil, "INSERT INTO kv VALUES ('iso', 1)"))
		assert.Equal(t, 1, count(t, writer, "iso"))
		assert.Equal(t, 0, count(t, reader, "iso"), "an uncommitted insert is invisible to another checkout")
		require.NoError(t, writer.Call(ctx, "commit", nil))
		assert.Equal(t, 1, count(t, reader, "iso"), "visible once committed")
	})

	t.Run("errors carry sqlite3's exception type", func(t *testing.T) {
		co := checkout(t)
		err := co.Call(ctx, "execute", nil, "INSERT INTO kv VALUES ('iso', 2)")
		var re *client.RemoteError
		require.ErrorAs(t, err, &re)
		assert.Equal(t, "IntegrityError", re.Type)
		err = co.Call(ctx, "query", nil, "SELECT * FROM nowhere")
		require.ErrorAs(t, err, &re)
		assert.Equal(t, "OperationalError", re.Type)
	})
}

func TestPasswdPyExample(t *testing.T) {
	c := sdkExample(t, "passwd-py", "python3", "examples/passwd-py/worker.py",
		"env: {SCRYPT_N: \"1024\"}\nmin_idle: 1")
	ctx := ctxT(t)
	const password = "sécret 😀"
	var h1, h2 string
	require.NoError(t, c.Call(ctx, "hash", &h1, password))
	require.NoError(t, c.Call(ctx, "hash", &h2, password))
	assert.True(t, strings.HasPrefix(h1, "scrypt$1024$8$1$"), h1)
	assert.NotEqual(t, h1, h2, "a fresh random salt per hash")

	for _, tc := range []struct {
		hash, password string
		want           bool
	}{{h1, password, true}, {h2, password, true}, {h1, "sécret 😁", false}, {h1, "", false}} {
		var ok bool
		require.NoError(t, c.Call(ctx, "verify", &ok, tc.hash, tc.password))
		assert.Equal(t, tc.want, ok, "verify(%q, %q)", tc.hash, tc.password)
	}

	err := c.Call(ctx, "verify", nil, "md5$abc", password)
	var re *client.RemoteError
	require.ErrorAs(t, err, &re, "a malformed hash is an error, not a mismatch")
	assert.Equal(t, "ValueError", re.Type)
	err = c.Call(ctx, "verify", nil, "scrypt$1073741824$8$1$c2FsdHNhbHQ=$"+strings.Repeat("A", 44), password)
	require.ErrorAs(t, err, &re, "a hash asking for a huge N is refused")
	assert.Contains(t, re.Message, "out of range")
}

func TestPerlTextExample(t *testing.T) {
	c := sdkExample(t, "perl-text", "perl", "examples/perl-text/worker.pl", "min_idle: 1")
	ctx := ctxT(t)
	const text = "Ünïcödé ÜNÏCÖDÉ ünïcödé, Straße straße! 東京 東京 東京. Été l’été don't 😀 Ωμέγα ωμέγα"
	var counts map[string]int
	require.NoError(t, c.Call(ctx, "wordcount", &counts, text))
	assert.Equal(t, map[string]int{
		"ünïcödé": 3, "straße": 2, "東京": 3, "été": 1, "l’été": 1, "don't": 1, "ωμέγα": 2,
	}, counts)

	var top [][]any
	require.NoError(t, c.Call(ctx, "top", &top, text, 3))
	require.Len(t, top, 3)
	assert.Equal(t, "ünïcödé", top[0][0], "ties in alphabetical order: %v", top)
	assert.Equal(t, "東京", top[1][0], "%v", top)
	assert.Equal(t, "straße", top[2][0], "%v", top)

	err := c.Call(context.Background(), "top", nil, text, 0)
	var re *client.RemoteError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "TextError", re.Type)
}
