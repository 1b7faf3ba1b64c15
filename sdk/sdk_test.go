// Package sdk_test runs the Python and Perl SDKs' own tests as part of `go test ./...`, so
// that `make test` covers them: `python3 -m unittest` in sdk/python and `prove -l t` in
// sdk/perl, as a developer of either SDK runs them. It also installs the Python SDK the
// way a user does, offline, into a fresh virtual environment.
//
// A test skips, saying why, when the interpreter it needs is not installed; with
// TASKD_TEST_REQUIRE_SDKS=1 (set by .ci/run, which installs them) it fails instead.
package sdk_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The Debian packages that give a python3 what TestPythonSDKInstallsOffline needs.
const pythonPackages = "python3-venv python3-setuptools python3-wheel python3-pip"

// missing skips the test because a tool is not installed, or fails it where the tools are
// required (CI).
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("TASKD_TEST_REQUIRE_SDKS") != "" {
		t.Fatalf("TASKD_TEST_REQUIRE_SDKS is set, but "+format, args...)
	}
	t.Skipf("SKIPPING: "+format, args...)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestPythonSDK(t *testing.T) {
	t.Parallel()
	py, err := exec.LookPath("python3")
	if err != nil {
		missing(t, "the Python SDK was NOT tested: python3 is not installed (.ci/run installs it)")
	}
	cmd := exec.CommandContext(t.Context(), py, "-m", "unittest", "-v")
	cmd.Dir = filepath.Join(repoRoot(t), "sdk", "python")
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1") // no __pycache__ in the tree
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cd sdk/python && python3 -m unittest -v: %v\n%s", err, out)
	}
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}

func TestPerlSDK(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("perl"); err != nil {
		missing(t, "the Perl SDK was NOT tested: perl is not installed (.ci/run installs it)")
	}
	prove, err := exec.LookPath("prove")
	if err != nil {
		missing(t, "the Perl SDK was NOT tested: prove (part of perl) is not installed (.ci/run installs perl)")
	}
	cmd := exec.CommandContext(t.Context(), prove, "-l", "t")
	cmd.Dir = filepath.Join(repoRoot(t), "sdk", "perl")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cd sdk/perl && prove -l t: %v\n%s", err, out)
	}
	// In the source tree every test file runs: a skip means that the tests could not find
	// the conformance worker they drive.
	if bytes.Contains(out, []byte("skipped:")) {
		t.Fatalf("cd sdk/perl && prove -l t skipped tests in the source tree:\n%s", out)
	}
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}

// TestPythonSDKInstallsOffline does what a user does with no package index in reach:
// creates a virtual environment that sees the system's setuptools, wheel and pip, runs
// `pip install --no-build-isolation --no-index ./sdk/python` into it, and imports
// taskd_worker from outside the source tree, checking that it comes from the environment's
// site-packages and serves a call. pip builds in the directory it installs from (build/,
// *.egg-info), so it installs from a copy of sdk/python: the checkout stays clean.
func TestPythonSDKInstallsOffline(t *testing.T) {
	t.Parallel()
	py := installPython(t)
	tmp := t.TempDir()
	src := filepath.Join(tmp, "checkout")
	copySDK(t, filepath.Join(repoRoot(t), "sdk", "python"), filepath.Join(src, "sdk", "python"))
	for _, d := range []string{"tmp", "elsewhere"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := pythonEnv(filepath.Join(tmp, "tmp"))
	run := func(dir string, stdin string, argv ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), argv[0], argv[1:]...)
		cmd.Dir, cmd.Env = dir, env
		cmd.Stdin = strings.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("(cd %s && %s): %v\nstdout:\n%s\nstderr:\n%s", dir, strings.Join(argv, " "), err, out, stderr.Bytes())
		}
		return out
	}

	venv := filepath.Join(tmp, "venv")
	run(tmp, "", py, "-m", "venv", "--system-site-packages", "--without-pip", venv)
	vpy := filepath.Join(venv, "bin", "python")
	run(src, "", vpy, "-m", "pip", "install", "--no-build-isolation", "--no-index", "--no-cache-dir", "./sdk/python")

	// Imported from a directory outside the checkout, so that only the install can be found.
	out := run(filepath.Join(tmp, "elsewhere"), "", vpy, "-c", `
import importlib.metadata, json, os, sysconfig
import taskd_worker
print(json.dumps({"file": taskd_worker.__file__, "purelib": sysconfig.get_paths()["purelib"],
                  "version": taskd_worker.__version__, "dist": importlib.metadata.version("taskd-worker"),
                  "typed": os.path.isfile(os.path.join(os.path.dirname(taskd_worker.__file__), "py.typed"))}))
`)
	var got struct {
		File, Purelib, Version, Dist string
		Typed                        bool
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("the import check printed %q: %v", out, err)
	}
	file, purelib := realPath(t, got.File), realPath(t, got.Purelib)
	if !strings.HasPrefix(file, purelib+string(filepath.Separator)) {
		t.Errorf("taskd_worker was imported from %s, not from the virtual environment's site-packages %s", got.File, got.Purelib)
	}
	if got.Dist != got.Version {
		t.Errorf("distribution taskd-worker %s installed, but taskd_worker.__version__ is %s", got.Dist, got.Version)
	}
	if !got.Typed {
		t.Errorf("py.typed is not installed beside %s", got.File)
	}

	// The installed package serves a call.
	worker := filepath.Join(tmp, "elsewhere", "worker.py")
	script := "from taskd_worker import Worker\nw = Worker()\nw.method(\"hello\")(lambda ctx, name: \"hello, \" + name)\nw.run()\n"
	if err := os.WriteFile(worker, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	out = run(filepath.Join(tmp, "elsewhere"), `{"t":"call","id":1,"m":"hello","a":["you"]}`+"\n", vpy, worker)
	want := `{"t":"ready","v":1,"pipeline":true}` + "\n" + `{"t":"ok","id":1,"r":"hello, you"}` + "\n"
	if string(out) != want {
		t.Errorf("the installed SDK's worker wrote\n%s\nwant\n%s", out, want)
	}
}

// installPython finds a python3 that can build and install the SDK offline: python3 on
// PATH if it can (it may be a build without wheel, outside Debian's packages), else the
// system's /usr/bin/python3, where Debian's packages put setuptools, wheel and pip.
func installPython(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the offline install is tested on Linux, with Debian's packages")
	}
	// setuptools ≥ 61 reads pyproject.toml's [project] table; before 70.1 it builds wheels
	// with the wheel package; pip comes from the system (the venv is made without one).
	// (pip last: importing it first makes setuptools' distutils shim fail)
	const probe = `
import sys, venv, setuptools
try:
    v = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
except ValueError:
    v = (0, 0)
if v < (61, 0):
    sys.exit("setuptools %s is older than 61" % setuptools.__version__)
if v < (70, 1):
    import wheel
import pip
`
	var candidates, why []string
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		candidates = append(candidates, "/usr/bin/python3")
	}
	for _, p := range candidates {
		cmd := exec.CommandContext(t.Context(), p, "-c", probe)
		cmd.Env = pythonEnv(t.TempDir())
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Logf("installing with %s", p)
			return p
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		why = append(why, p+": "+lines[len(lines)-1])
	}
	if len(candidates) == 0 {
		missing(t, "the Python SDK's install was NOT tested: python3 is not installed (.ci/run installs %s)", pythonPackages)
	}
	missing(t, "the Python SDK's install was NOT tested: no python3 has venv, pip, setuptools ≥ 61 and wheel (%s); "+
		"on Debian: apt-get install %s (.ci/run does)", strings.Join(why, "; "), pythonPackages)
	return ""
}

// pythonEnv is the environment for python and pip in these tests: the caller's, without
// what would point them elsewhere (PYTHONPATH, a user's pip config, an active venv), with
// temporary files in tmp.
func pythonEnv(tmp string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PYTHON") || strings.HasPrefix(k, "PIP_") || k == "VIRTUAL_ENV" || k == "TMPDIR" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "TMPDIR="+tmp, "PIP_CONFIG_FILE="+os.DevNull, "PIP_DISABLE_PIP_VERSION_CHECK=1",
		"PIP_NO_INPUT=1", "PYTHONNOUSERSITE=1")
}

// copySDK copies the source files of the SDK at from to to: what a checkout holds, without
// what builds and test runs leave (all ignored by git).
func copySDK(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && (name == "build" || name == "dist" || name == "__pycache__" || strings.HasSuffix(name, ".egg-info")) {
			return filepath.SkipDir
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		if !d.Type().IsRegular() || strings.HasSuffix(name, ".pyc") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copying %s: %v", from, err)
	}
}

func realPath(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return r
}
