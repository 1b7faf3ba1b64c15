// Package internal_test enforces the one-way imports between taskd's packages.
package internal_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/taskd-dev/taskd/"

// allowed lists, for each package, the project packages it may import (outside tests).
// Imports run one way: server → pool → worker → sendq → fdio, with wire below them all
// (server also uses config and procfs; worker also uses procfs); pkg/worker sees wire only;
// pkg/client sees wire, sendq and fdio.
var allowed = map[string][]string{
	"internal":                          {},                                                                       // this test
	"internal/bench":                    {"pkg/client", "internal/wire", "internal/procfs", "internal/taskdproc"}, // benchmark harness (make bench)
	"internal/procfs":                   {},
	"internal/crash":                    {},                  // a panic in a daemon goroutine: logged, then exit
	"internal/taskdproc":                {"internal/procfs"}, // the daemon launcher of tests and benchmark
	"internal/fdio":                     {},
	"internal/sendq":                    {"internal/fdio"},
	"internal/lease":                    {}, // direct leases: control codec, stats page, descriptors on a stream
	"internal/wire":                     {},
	"internal/config":                   {"internal/wire"},
	"internal/worker":                   {"internal/wire", "internal/lease", "internal/sendq", "internal/fdio", "internal/procfs", "internal/crash", "internal/sandbox"},
	"internal/sandbox":                  {}, // the re-exec helper that applies umask and rlimits to workers
	"internal/pool":                     {"internal/worker", "internal/wire", "internal/procfs", "internal/crash"},
	"internal/server":                   {"internal/pool", "internal/worker", "internal/lease", "internal/wire", "internal/config", "internal/sendq", "internal/fdio", "internal/crash", "internal/procfs", "internal/sandbox", "internal/cgroup"},
	"internal/cgroup":                   {}, // worker cgroups; worker sees it only as worker.Cgroup
	"internal/taskdtest":                {"internal/procfs", "internal/taskdproc", "internal/sandbox", "internal/cgroup"},
	"internal/conformance":              {},
	"internal/taskdtest/leaseworker":    {"internal/lease"}, // a minimal lease-speaking worker (tests, bench floor)
	"internal/conformance/goworker":     {"pkg/worker"},
	"pkg/client":                        {"internal/wire", "internal/lease", "internal/sendq", "internal/fdio"},
	"pkg/worker":                        {"internal/wire", "internal/lease"},
	"pkg/taskdtest":                     {"internal/config", "internal/server", "internal/procfs", "internal/sandbox", "pkg/client", "pkg/worker"}, // the public test server runs the daemon in-process
	"pkg/taskdtest/internal/testmain":   {},                                                                                                        // tests only: a TestMain that serves a package's tests with taskdtest.New
	"cmd/taskd":                         {"internal/config", "internal/server", "internal/systemd", "internal/sandbox"},
	"internal/systemd":                  {"internal/server"},
	"cmd/taskctl":                       {"pkg/client", "internal/wire", "internal/bench"},
	"cmd/taskd-bench":                   {"internal/bench"},
	"internal/soak":                     {"pkg/client", "pkg/worker", "internal/procfs", "internal/taskdproc"}, // chaos soak harness (make soak)
	"cmd/taskd-soak":                    {"internal/soak"},
	"deploy/deb":                        {},                       // tests of the Debian package (make deb)
	"deploy/kubernetes":                 {},                       // tests of the Kubernetes manifests and the Dockerfile
	"internal/floorworker":              {"internal/wire"},        // the minimal worker the Go SDK is measured against
	"internal/floorworker/floor-worker": {"internal/floorworker"}, // its binary
}

func TestImportsRunOneWay(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, mod)
		ok, known := allowed[name]
		if !known {
			if strings.HasPrefix(name, "examples/") || strings.HasPrefix(name, "sdk") || strings.HasPrefix(name, "cmd/taskd-bench") {
				ok, known = []string{"pkg/client", "pkg/worker"}, true // programs built on the public SDKs
			} else {
				t.Errorf("package %s is not in the layering table: add it with the imports it may use", name)
				continue
			}
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			dep := strings.TrimPrefix(imp, mod)
			if !contains(ok, dep) {
				t.Errorf("%s imports %s, which breaks the one-way layering (allowed: %v)", name, dep, ok)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
