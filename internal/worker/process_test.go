package worker

import (
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestExitedAsksTheKernel: the waitid probe tells a running child from one that has
// exited and is not reaped yet, and from one that has been reaped, on this architecture's
// siginfo layout.
func TestExitedAsksTheKernel(t *testing.T) {
	sleeper := exec.Command("sleep", "30")
	require.NoError(t, sleeper.Start())
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	p := &process{pid: sleeper.Process.Pid}
	require.False(t, p.exited(), "a sleeping child has exited")

	quick := exec.Command("true")
	require.NoError(t, quick.Start())
	p = &process{pid: quick.Process.Pid}
	require.Eventually(t, p.exited, 10*time.Second, time.Millisecond, "an exited child has not")
	require.True(t, p.exited(), "WNOWAIT reaped the child")
	require.NoError(t, quick.Wait())
	require.True(t, p.exited(), "a reaped child (ECHILD) has not exited")
}

func TestCutRuneKeepsWholeCharacters(t *testing.T) {
	for in, want := range map[string]string{
		"":         "",
		"abc":      "abc",
		"ab€":      "ab€",
		"ab€"[:4]:  "ab",
		"ab€"[:3]:  "ab",
		"a😀"[:4]:   "a",
		"a😀":       "a😀",
		"\xff\xfe": "\xff\xfe", // not UTF-8 at all: left alone
	} {
		require.Equal(t, want, string(cutRune([]byte(in))), "%q", in)
	}
}
