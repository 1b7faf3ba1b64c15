package procfs_test

import (
	"os"
	"os/exec"
	"slices"
	"testing"

	"github.com/taskd-dev/taskd/internal/procfs"
)

func TestChildren(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if kids := procfs.Children(os.Getpid()); !slices.Contains(kids, cmd.Process.Pid) {
		t.Fatalf("children of the test %v do not include the child %d", kids, cmd.Process.Pid)
	}
	if kids := procfs.Children(1 << 30); len(kids) != 0 {
		t.Fatalf("a pid that does not exist has children %v", kids)
	}
}
