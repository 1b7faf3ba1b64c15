package crash

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOnPanicLogsAndExits(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	code := -1
	exit = func(c int) { code = c }
	defer func() { exit = os.Exit }()
	func() {
		defer OnPanic(zap.New(core), "session")
		panic("boom")
	}()
	assert.Equal(t, 2, code)
	require.Equal(t, 1, logs.Len())
	e := logs.All()[0]
	assert.Contains(t, e.Message, "panic")
	fields := e.ContextMap()
	assert.Equal(t, "session", fields["goroutine"])
	assert.Equal(t, "boom", fields["panic"])
	assert.Contains(t, fields["stack"], "TestOnPanicLogsAndExits", "the stack names where it panicked")
}

func TestOnPanicWithoutPanicDoesNothing(t *testing.T) {
	exit = func(int) { t.Fatal("exit called") }
	defer func() { exit = os.Exit }()
	core, logs := observer.New(zap.DebugLevel)
	func() {
		defer OnPanic(zap.New(core), "x")
	}()
	assert.Zero(t, logs.Len())
}
