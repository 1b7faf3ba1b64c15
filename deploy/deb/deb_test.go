package deb_test

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/config"
)

// version is what the test builds the package as: a tagged commit with changes, which
// exercises every rule of build.sh's mapping to a Debian version.
const (
	version    = "v1.2.3-4-gabcdef0-dirty"
	debVersion = "1.2.3+4.gabcdef0.dirty"
)

// debArch maps GOARCH to Debian's architecture names, as build.sh does.
var debArch = map[string]string{
	"amd64": "amd64", "arm64": "arm64", "386": "i386", "arm": "armhf", "ppc64le": "ppc64el",
	"s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64el", "loong64": "loong64",
}

// TestPackage builds the package as `make deb` does, then checks what is in it and that
// the unpacked binaries run on the shipped config.
func TestPackage(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not found: install dpkg (Debian, Ubuntu) to test the Debian package")
	}
	arch, ok := debArch[runtime.GOARCH]
	if !ok {
		t.Skipf("no Debian architecture known for GOARCH=%s", runtime.GOARCH)
	}
	if runtime.GOARCH == "arm" {
		t.Skip("GOARCH=arm: armel or armhf depends on GOARM; not tested")
	}

	// Build: the package goes to out, build.sh stages it under tmp (removed by the test
	// either way), so nothing is left in the repository or in /tmp.
	out, tmp := t.TempDir(), t.TempDir()
	build := exec.Command("bash", "build.sh", out)
	build.Env = append(cleanEnv(), "TMPDIR="+tmp, "VERSION="+version)
	var stderr bytes.Buffer
	build.Stderr = &stderr
	stdout, err := build.Output()
	require.NoError(t, err, "build.sh failed:\n%s", stderr.String())
	deb := filepath.Join(out, "taskd_"+debVersion+"_"+arch+".deb")
	assert.Equal(t, deb, strings.TrimSpace(string(stdout)), "build.sh prints the package's path")
	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	require.Len(t, entries, 1, "OUTDIR holds the package only")
	entries, err = os.ReadDir(tmp)
	require.NoError(t, err)
	assert.Empty(t, entries, "build.sh removes its staging directory")

	t.Run("contents", func(t *testing.T) { checkContents(t, deb) })
	t.Run("control", func(t *testing.T) { checkControl(t, deb, arch) })

	root := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, root)
	t.Run("config", func(t *testing.T) { checkConfig(t, root) })
	t.Run("binaries", func(t *testing.T) {
		taskd := filepath.Join(root, "usr/bin/taskd")
		assert.Contains(t, run(t, taskd, "--version"), version)
		assert.Contains(t, run(t, filepath.Join(root, "usr/bin/taskctl"), "--help"), "taskctl")
		for _, bin := range []string{"usr/bin/taskd", "usr/bin/taskctl", "usr/lib/taskd/echo-worker"} {
			f, err := elf.Open(filepath.Join(root, bin))
			require.NoError(t, err)
			for _, p := range f.Progs {
				assert.NotEqual(t, elf.PT_INTERP, p.Type, "%s is dynamically linked; the package promises static binaries", bin)
			}
			require.NoError(t, f.Close())
		}
	})
	t.Run("units", func(t *testing.T) { checkUnits(t, root) })
	t.Run("copyright", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(root, "usr/share/doc/taskd/copyright"))
		require.NoError(t, err)
		for _, mod := range []string{"github.com/spf13/cobra", "go.uber.org/zap"} {
			assert.Contains(t, string(b), "\n"+mod+" v", "the licences of the linked modules are listed")
		}
		assert.NotContains(t, string(b), "no licence file found")
	})
}

// checkContents compares the package's file list with what it should ship: every
// expected file, nothing else, owned by root, binaries executable and the rest not.
func checkContents(t *testing.T, deb string) {
	want := []string{
		"etc/taskd/taskd.yaml",
		"usr/bin/taskctl",
		"usr/bin/taskd",
		"usr/lib/sysusers.d/taskd.conf",
		"usr/lib/taskd/echo-worker",
		"usr/lib/tmpfiles.d/taskd.conf",
		"usr/share/doc/taskd/README.md",
		"usr/share/doc/taskd/copyright",
		"usr/share/doc/taskd/systemd.md",
	}
	for _, pattern := range []string{"../systemd/*.service", "../systemd/*.socket"} {
		units, _ := filepath.Glob(pattern)
		for _, u := range units {
			want = append(want, "usr/lib/systemd/system/"+filepath.Base(u))
		}
	}
	docs, _ := filepath.Glob("../../docs/*.md")
	require.NotEmpty(t, docs)
	for _, d := range docs {
		want = append(want, "usr/share/doc/taskd/docs/"+filepath.Base(d))
	}
	slices.Sort(want)
	dirs := map[string]bool{}
	for _, f := range want {
		for d := path.Dir(f); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}

	listing := run(t, "dpkg-deb", "-c", deb)
	t.Logf("dpkg-deb -c:\n%s", listing)
	var files []string
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		// drwxr-xr-x root/root 0 2026-01-01 00:00 ./usr/bin/
		f := strings.Fields(line)
		require.Len(t, f, 6, "unexpected dpkg-deb -c line %q (a link, or a space in a name?)", line)
		mode, owner, name := f[0], f[1], strings.TrimSuffix(strings.TrimPrefix(f[5], "./"), "/")
		assert.Equal(t, "root/root", owner, name)
		switch {
		case name == "":
		case mode[0] == 'd':
			assert.True(t, dirs[name], "unexpected directory %s in the package", name)
			assert.Equal(t, "drwxr-xr-x", mode, name)
		default:
			files = append(files, name)
			if strings.Contains(name, "/bin/") || strings.HasPrefix(name, "usr/lib/taskd/") {
				assert.Equal(t, "-rwxr-xr-x", mode, name)
			} else {
				assert.Equal(t, "-rw-r--r--", mode, name)
			}
		}
	}
	slices.Sort(files)
	assert.Equal(t, want, files, "the package's files")
}

// checkControl reads the control fields and the maintainer scripts.
func checkControl(t *testing.T, deb, arch string) {
	field := func(name string) string { return strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, name)) }
	assert.Equal(t, "taskd", field("Package"))
	assert.Equal(t, debVersion, field("Version"))
	assert.Equal(t, arch, field("Architecture"))
	assert.NotEmpty(t, field("Maintainer"))
	assert.NotEmpty(t, field("Description"))
	assert.Empty(t, field("Depends"), "the binaries are static: no dependencies")
	assert.Empty(t, field("Pre-Depends"))

	ctl := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, ctl)
	conffiles, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
	require.NoError(t, err)
	assert.Equal(t, "/etc/taskd/taskd.yaml\n", string(conffiles))
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		p := filepath.Join(ctl, script)
		fi, err := os.Stat(p)
		require.NoError(t, err, script)
		assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm(), script)
		run(t, "sh", "-n", p) // parses
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		assert.NotContains(t, string(b), "@UNITS@", "%s: unit names substituted", script)
		// Without systemd (a container, a chroot) the scripts must not fail: every
		// systemd tool is called only where it is, or where systemd runs.
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "systemctl ") && !strings.HasPrefix(strings.TrimSpace(line), "#") {
				assert.Contains(t, string(b), "[ -d /run/systemd/system ]", "%s calls systemctl: it must check that systemd runs", script)
				assert.Contains(t, line, "|| true", "%s: %q must not fail the script", script, line)
			}
		}
	}
	t.Run("scripts", func(t *testing.T) { checkScripts(t, ctl) })
}

// checkScripts runs the maintainer scripts as dpkg would on install, upgrade and removal,
// with a PATH of stubs that log their arguments, so that nothing on this machine changes:
// with systemd's tools, with only useradd, and with no tools at all (a bare container).
func checkScripts(t *testing.T, ctl string) {
	sh, err := exec.LookPath("sh")
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		tools []string // stubbed; each exits 0 but getent, which finds no user
		calls []string // lines the log must have
	}{
		{"systemd", []string{"systemd-sysusers", "systemd-tmpfiles", "systemctl", "getent", "useradd", "install"},
			[]string{"systemd-sysusers taskd.conf", "systemd-tmpfiles --create taskd.conf"}},
		{"useradd only", []string{"getent", "useradd", "install"},
			[]string{"useradd --system --user-group --home-dir /var/lib/taskd --no-create-home --shell /usr/sbin/nologin --comment taskd worker pool daemon taskd"}},
		{"no tools", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stubs := t.TempDir()
			log := filepath.Join(stubs, "log")
			for _, tool := range tc.tools {
				code := map[bool]string{true: "2", false: "0"}[tool == "getent"]
				stub := "#!" + sh + "\necho " + tool + ` "$@" >>` + log + "\nexit " + code + "\n"
				require.NoError(t, os.WriteFile(filepath.Join(stubs, tool), []byte(stub), 0o755))
			}
			for _, args := range [][]string{{"postinst", "configure"}, {"postinst", "configure", "1.0"}, {"prerm", "upgrade", "1.1"}, {"prerm", "remove"}, {"postrm", "remove"}} {
				cmd := exec.Command(sh, append([]string{filepath.Join(ctl, args[0])}, args[1:]...)...)
				cmd.Env = []string{"PATH=" + stubs}
				out, err := cmd.CombinedOutput()
				assert.NoError(t, err, "%v:\n%s", args, out)
			}
			b, _ := os.ReadFile(log)
			for _, call := range tc.calls {
				assert.Contains(t, strings.Split(string(b), "\n"), call)
			}
		})
	}
}

// checkConfig runs the unpacked taskd on the shipped config, and checks that the config
// names only programs the package installs.
func checkConfig(t *testing.T, root string) {
	conf := filepath.Join(root, "etc/taskd/taskd.yaml")
	out := run(t, filepath.Join(root, "usr/bin/taskd"), "--check-config", "-c", conf)
	assert.Contains(t, out, "config OK")

	cfg, err := config.Load(conf, nil)
	require.NoError(t, err)
	require.NotEmpty(t, cfg.Interfaces)
	for name, in := range cfg.Interfaces {
		prog := in.Command[0]
		require.True(t, filepath.IsAbs(prog), "interface %s: command %q must be an absolute path, as the service's working directory is not where it is", name, prog)
		fi, err := os.Stat(filepath.Join(root, prog))
		if assert.NoError(t, err, "interface %s: %s is not in the package", name, prog) {
			assert.NotZero(t, fi.Mode().Perm()&0o111, "interface %s: %s is not executable", name, prog)
		}
	}
}

// checkUnits checks that the shipped units point at what the package installs, and
// verifies them with systemd-analyze where it is installed.
func checkUnits(t *testing.T, root string) {
	units, err := filepath.Glob(filepath.Join(root, "usr/lib/systemd/system/*"))
	require.NoError(t, err)
	require.NotEmpty(t, units)
	for _, u := range units {
		b, err := os.ReadFile(u)
		require.NoError(t, err)
		text := string(b)
		assert.NotContains(t, text, "/usr/local", "%s: paths of a hand install left in the package's unit", u)
		for _, line := range strings.Split(text, "\n") {
			key, val, ok := strings.Cut(strings.TrimSpace(line), "=")
			if !ok || strings.HasPrefix(key, "#") {
				continue
			}
			var paths []string
			switch key {
			case "ExecStart", "ExecReload", "ExecStop":
				paths = []string{strings.TrimLeft(strings.Fields(val)[0], "-@:+!")}
			case "WorkingDirectory":
				paths = []string{val}
			case "Documentation":
				for _, d := range strings.Fields(val) {
					if p, ok := strings.CutPrefix(d, "file://"); ok {
						paths = append(paths, p)
					}
				}
			}
			for _, p := range paths {
				_, err := os.Stat(filepath.Join(root, p))
				if err != nil && strings.HasPrefix(key, "Exec") {
					_, err = os.Stat(p) // a system program, such as /bin/kill
				}
				assert.NoError(t, err, "%s: %s=%s is not in the package", filepath.Base(u), key, p)
			}
		}
		if strings.HasSuffix(u, ".service") {
			assert.Contains(t, text, "ExecStart=/usr/bin/taskd ", "the service runs the package's taskd")
			assert.Contains(t, text, " -c /etc/taskd/taskd.yaml", "the service reads the package's config")
			// Worker cgroups need the service's cgroup delegated, and writable.
			assert.Contains(t, text, "\nDelegate=yes\n", "the service delegates its cgroup to taskd")
			assert.NotContains(t, text, "\nProtectControlGroups=yes\n", "a read-only /sys/fs/cgroup turns worker cgroups off")
		}
	}

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not found: units not verified")
		return
	}
	// verify checks that ExecStart's program exists on this machine, where the package is
	// not installed: verify copies whose /usr/bin/ is the unpacked one.
	dir := t.TempDir()
	args := []string{"verify", "--man=no"}
	for _, u := range units {
		b, err := os.ReadFile(u)
		require.NoError(t, err)
		p := filepath.Join(dir, filepath.Base(u))
		require.NoError(t, os.WriteFile(p, bytes.ReplaceAll(b, []byte("=/usr/bin/"), []byte("="+root+"/usr/bin/")), 0o644))
		args = append(args, p)
	}
	out, err := exec.Command("systemd-analyze", args...).CombinedOutput()
	assert.NoError(t, err, "systemd-analyze verify:\n%s", out)
	// verify only warns about a key or value it does not know. Type=notify-reload is new
	// in systemd 253: an older one's warning about it is expected.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "Failed to parse service type, ignoring: notify-reload") {
			t.Logf("this systemd predates Type=notify-reload (253): %s", line)
			continue
		}
		assert.NotRegexp(t, `(?i)unknown key|failed to parse|invalid`, line, "systemd-analyze verify warns")
	}
}

// run runs a command and returns its stdout, failing the test with its stderr if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "%s %s:\n%s%s", name, strings.Join(args, " "), out, stderr.String())
	return string(out)
}

// cleanEnv is the test's environment without TASKD_* variables, which would change what
// taskd reads from the config, and without VERSION, GOARCH and GOOS, which build.sh reads.
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "TASKD_") || strings.HasPrefix(kv, "VERSION=") ||
			strings.HasPrefix(kv, "GOARCH=") || strings.HasPrefix(kv, "GOOS=")
	})
}
