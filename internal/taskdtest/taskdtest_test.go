package taskdtest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/pkg/client"
)

func TestMain(m *testing.M) { Main(m) }

// childEnv makes TestChildProcess do its part of TestNothingLeftInTempDir.
const childEnv = "TASKDTEST_CHILD"

// TestNothingLeftInTempDir runs test processes of this package with TMPDIR pointing at a
// fresh directory and checks what they leave there: a process that crashes leaves its
// scratch directory (which proves the check can see one), the next one removes it, and a
// process that ends normally leaves nothing at all, whatever it built and started. A
// process that forgets to stop a StartForMain daemon fails.
func TestNothingLeftInTempDir(t *testing.T) {
	if testing.Short() {
		t.Skip("builds taskd twice in subprocesses")
	}
	// Not t.TempDir: its path can be too long for the daemons' unix sockets below it.
	tmp, err := os.MkdirTemp("", "tdt")
	require.NoError(t, err)
	defer os.RemoveAll(tmp)
	left := func() []string {
		ents, err := os.ReadDir(tmp)
		require.NoError(t, err)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	run := func(mode string) (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestChildProcess$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp, childEnv+"="+mode, "GORACE=atexit_sleep_ms=0")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := run("crash")
	require.Error(t, err, out)
	names := left()
	require.Len(t, names, 1, "a crashed test process leaves its scratch directory:\n%s", out)
	assert.True(t, strings.HasPrefix(names[0], scratchPrefix), names[0])

	out, err = run("normal")
	require.NoError(t, err, out)
	assert.Empty(t, left(), "what a test process left in the temporary directory")

	out, err = run("nostop")
	require.Error(t, err, out)
	assert.Contains(t, out, "was still running when the tests ended")
	assert.Empty(t, left(), "what a test process that failed Main's check left")
}

// TestChildProcess is a test process of TestNothingLeftInTempDir, which runs it with
// TASKDTEST_CHILD set; otherwise it does nothing.
func TestChildProcess(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		t.Skip("a child process of TestNothingLeftInTempDir")
	}
	yaml := "interfaces:\n" + WorkerYAML("echo", "raw", "min_idle: 1")
	switch mode {
	case "crash":
		_, err := scratch()
		require.NoError(t, err)
		panic("crashing on purpose, leaving the scratch directory behind")
	case "normal":
		_ = t.TempDir()
		_ = TempDir(t)
		d := Start(t, yaml)
		c, err := client.New(client.Config{Addr: d.Addr, Interface: "echo"})
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.Call(context.Background(), "echo", nil))
		_, stop, err := StartForMain(yaml)
		require.NoError(t, err)
		require.NoError(t, stop())
	case "nostop":
		_, _, err := StartForMain(yaml)
		require.NoError(t, err)
	default:
		t.Fatalf("unknown mode %q", mode)
	}
}

func TestBinaryNeedsMain(t *testing.T) {
	mainCalled.Store(false)
	defer mainCalled.Store(true)
	_, err := BuildForMain("cmd/taskd")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "taskdtest.Main(m)")
}

func TestStopReportsAndWaits(t *testing.T) {
	d := Start(t, "interfaces:\n"+WorkerYAML("echo", "raw", "min_idle: 2"))
	require.Eventually(t, func() bool { return len(Children(d.PID())) == 2 }, 20*time.Second, 5*time.Millisecond)
	kids := Descendants(d.PID())
	require.NoError(t, d.Stop(20*time.Second))
	for _, p := range kids {
		assert.False(t, Alive(p))
	}
}
