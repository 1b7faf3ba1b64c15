package testmain_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/taskd-dev/taskd/pkg/client"
	"github.com/taskd-dev/taskd/pkg/taskdtest"
	"github.com/taskd-dev/taskd/pkg/worker"
)

// srv serves every test of the package; made by TestMain (through run, a helper: New
// finds TestMain on the call stack).
var srv *taskdtest.Server

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	var err error
	srv, err = taskdtest.New(taskdtest.Config{Interfaces: map[string]taskdtest.Interface{
		"env": {Worker: worker.Spec{Methods: map[string]worker.Func{
			"getenv": func(_ context.Context, c *worker.Call) (any, error) {
				var k string
				err := c.Args(&k)
				return os.Getenv(k), err
			},
			"inworker": func(context.Context, *worker.Call) (any, error) { return taskdtest.InWorker(), nil },
		}}},
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Where a Config without Addr connects.
	os.Setenv("TASKD_ADDR", srv.Addr())
	code := m.Run()
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	return code
}

// TestServedByTestMain: the workers of the interface made in TestMain are this test
// binary, started to run TestMain only.
func TestServedByTestMain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(client.Config{Interface: "env"}) // Addr: $TASKD_ADDR
	require.NoError(t, err)
	defer c.Close()
	var run string
	require.NoError(t, c.Call(ctx, "getenv", &run, "TASKDTEST_RUN"))
	assert.Equal(t, "TestMain", run)
	var in bool
	require.NoError(t, c.Call(ctx, "inworker", &in))
	assert.True(t, in, "InWorker in the worker process")
	assert.False(t, taskdtest.InWorker(), "InWorker in the test process")
	var exe string
	require.NoError(t, c.Call(ctx, "getenv", &exe, "TASKDTEST_WORKER"))
	assert.Equal(t, "env", exe)
}
