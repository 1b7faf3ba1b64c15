package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// reportEnv makes the test binary, run as a worker, print its own limits and status.
const reportEnv = "SANDBOX_TEST_REPORT"

func TestMain(m *testing.M) {
	Main()
	switch os.Getenv(reportEnv) {
	case "":
	case "restrict": // RestrictSelf, then report: what taskd's main does
		if err := RestrictSelf(); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		report()
	default:
		report()
	}
	goleak.VerifyTestMain(m)
}

// report prints the process's pid, argv, environment, /proc/self/status and
// /proc/self/limits, and exits.
func report() {
	status, _ := os.ReadFile("/proc/self/status")
	limits, _ := os.ReadFile("/proc/self/limits")
	fmt.Printf("pid %d\nargv %q\nenv %q\n%s%s", os.Getpid(), os.Args, os.Environ(), status, limits)
	os.Exit(0)
}

func u32(v uint32) *uint32 { return &v }

// field returns the value of the line of out that starts with prefix.
func field(t *testing.T, out, prefix string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no line %q in:\n%s", prefix, out)
	return ""
}

// TestHelperAppliesSpec runs this test binary as a worker through the helper: the
// umask, every rlimit (soft = hard; a Go worker's runtime does not raise nofile) and
// no_new_privs are applied; the worker keeps the helper's pid and gets its own argv and
// exactly the environment given, without the helper's marker.
func TestHelperAppliesSpec(t *testing.T) {
	cmd := exec.Command(os.Args[0], "worker-arg")
	cmd.Env = []string{reportEnv + "=1", "A=1"}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	spec := Spec{Umask: u32(0o027), Rlimits: []Rlimit{
		{"nofile", 200}, {"nproc", 4000}, {"as", 8 << 30}, {"cpu", 300}, {"core", 0}, {"fsize", 1 << 30},
	}}
	require.NoError(t, Wrap(cmd, spec))
	require.NoError(t, cmd.Run(), errOut.String())
	s := out.String()

	assert.Equal(t, strconv.Itoa(cmd.Process.Pid), field(t, s, "pid "), "the worker is the process taskd started")
	assert.Equal(t, fmt.Sprintf("%q", []string{os.Args[0], "worker-arg"}), field(t, s, "argv "))
	assert.Equal(t, fmt.Sprintf("%q", cmd.Env), field(t, s, "env "))
	assert.NotContains(t, s, HelperArg0)
	assert.Equal(t, "0027", field(t, s, "Umask:"))
	assert.Equal(t, "1", field(t, s, "NoNewPrivs:"))
	for name, want := range map[string]string{
		"Max open files":     "200                  200                  files",
		"Max processes":      "4000                 4000                 processes",
		"Max address space":  "8589934592           8589934592           bytes",
		"Max cpu time":       "300                  300                  seconds",
		"Max core file size": "0                    0                    bytes",
		"Max file size":      "1073741824           1073741824           bytes",
	} {
		assert.Equal(t, strings.Join(strings.Fields(want), " "), strings.Join(strings.Fields(field(t, s, name)), " "), name)
	}
}

// TestHelperFailures: a worker program that cannot be run, or a limit above the hard
// limit, fails the start with the reason on stderr and a shell's exit status.
func TestHelperFailures(t *testing.T) {
	run := func(cmd *exec.Cmd, spec Spec) (int, string) {
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		require.NoError(t, Wrap(cmd, spec))
		err := cmd.Run()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee)
		return ee.ExitCode(), errOut.String()
	}
	code, msg := run(exec.Command("/nonexistent/worker"), Spec{Umask: u32(0o22)})
	assert.Equal(t, 127, code)
	assert.Contains(t, msg, "taskd: starting the worker: exec /nonexistent/worker: no such file or directory")

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(dir+"/w", []byte("not executable"), 0o644))
	code, msg = run(exec.Command(dir+"/w"), Spec{Umask: u32(0o22)})
	assert.Equal(t, 126, code)
	assert.Contains(t, msg, "permission denied")

	if os.Geteuid() != 0 {
		var lim syscall.Rlimit
		require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
		code, msg = run(exec.Command("/bin/true"), Spec{Rlimits: []Rlimit{{"nofile", lim.Max + 1}}})
		assert.Equal(t, 126, code)
		assert.Contains(t, msg, "setting rlimit nofile")
	}

	// A program that was not found is left for Start to report, as without the helper.
	cmd := exec.Command("no-such-worker-program")
	require.NoError(t, Wrap(cmd, Spec{Umask: u32(0o22)}))
	assert.ErrorIs(t, cmd.Start(), exec.ErrNotFound)
}

// TestRestrictSelf: a process that calls RestrictSelf first thing has no_new_privs, in
// the same pid, with the same argv and environment.
func TestRestrictSelf(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$", "x")
	cmd.Env = []string{reportEnv + "=restrict", "B=2"}
	out, err := cmd.Output()
	require.NoError(t, err, string(out))
	s := string(out)
	assert.Equal(t, "1", field(t, s, "NoNewPrivs:"))
	assert.Equal(t, strconv.Itoa(cmd.Process.Pid), field(t, s, "pid "))
	assert.Equal(t, fmt.Sprintf("%q", []string{os.Args[0], "-test.run=^$", "x"}), field(t, s, "argv "))
	assert.Equal(t, fmt.Sprintf("%q", cmd.Env), field(t, s, "env "))
}

func TestSpecArgsRoundTrip(t *testing.T) {
	spec := Spec{Umask: u32(0o077), Rlimits: []Rlimit{{"nofile", 64}, {"core", 0}}}
	args, err := spec.args()
	require.NoError(t, err)
	h, err := parseArgs(append(args, "--", "/bin/w", "w", "--", "-umask"))
	require.NoError(t, err)
	assert.Equal(t, spec, h.spec)
	assert.Equal(t, "/bin/w", h.path)
	assert.Equal(t, []string{"w", "--", "-umask"}, h.argv)
	assert.True(t, Spec{}.Empty())
	assert.False(t, spec.Empty())

	_, err = Spec{Umask: u32(0o1777)}.args()
	assert.ErrorContains(t, err, "beyond 0777")
	_, err = Spec{Rlimits: []Rlimit{{"stack", 1}}}.args()
	assert.ErrorContains(t, err, `no rlimit "stack" (known: as, core, cpu, fsize, nofile, nproc)`)
	for _, bad := range [][]string{
		{"x"}, {HelperArg0}, {HelperArg0, "-umask"}, {HelperArg0, "-umask", "9", "--", "/p", "p"},
		{HelperArg0, "-rlimit", "nofile=-1", "--", "/p", "p"}, {HelperArg0, "-what", "1", "--", "/p", "p"},
		{HelperArg0, "--", "/p"}, {HelperArg0, "--", "", "p"},
	} {
		_, err := parseArgs(bad)
		assert.Error(t, err, "%q", bad)
	}
}

// FuzzParseArgs: the helper's decoder never panics, and what it accepts encodes back to
// the same command line.
func FuzzParseArgs(f *testing.F) {
	f.Add("-umask\x000027\x00-rlimit\x00nofile=10\x00--\x00/bin/w\x00w")
	f.Add("--\x00/bin/w\x00w\x00x")
	f.Add("-rlimit\x00cpu=\x00--")
	f.Fuzz(func(t *testing.T, s string) {
		args := append([]string{HelperArg0}, strings.Split(s, "\x00")...)
		h, err := parseArgs(args)
		if err != nil {
			return
		}
		again, err := h.spec.args()
		require.NoError(t, err)
		h2, err := parseArgs(append(append(again, "--", h.path), h.argv...))
		require.NoError(t, err)
		assert.Equal(t, h, h2)
	})
}

// BenchmarkStart is what the helper adds to a process start: /bin/true run directly, and
// through the helper (this test binary; taskd's own executable initializes more packages
// and costs more, see docs/security.md for figures measured with it).
func BenchmarkStart(b *testing.B) {
	for _, helper := range []bool{false, true} {
		name := "direct"
		if helper {
			name = "helper"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				cmd := exec.Command("/bin/true")
				if helper {
					if err := Wrap(cmd, Spec{Umask: u32(0o22)}); err != nil {
						b.Fatal(err)
					}
				}
				if err := cmd.Run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
