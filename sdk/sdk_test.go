// Package sdk_test runs the Python and Perl SDKs' own tests (sdk/python/tests, which also
// drive the Perl SDK) as part of `go test ./...`, so that `make test` covers them.
package sdk_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestPythonAndPerlSDKs(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("SKIPPING the Python and Perl SDK tests: python3 is not installed (CI installs it)")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), py, "-m", "unittest", "discover", "-s", "sdk/python/tests", "-v")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1") // no __pycache__ in the tree
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3 -m unittest discover -s sdk/python/tests: %v\n%s", err, out)
	}
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}
