package procfs_test

import (
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

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

func TestAlive(t *testing.T) {
	if !procfs.Alive(os.Getpid()) {
		t.Fatal("this process is not alive")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Exited and not yet reaped: a zombie is not alive.
	deadline := time.Now().Add(10 * time.Second)
	for procfs.Alive(cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatal("an exited child still counts as alive")
		}
		time.Sleep(time.Millisecond)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if procfs.Alive(cmd.Process.Pid) {
		t.Fatal("a reaped child counts as alive")
	}
}

func TestRSSAndPeakRSS(t *testing.T) {
	rss, err := procfs.RSS(os.Getpid())
	if err != nil || rss <= 0 {
		t.Fatalf("RSS = %d, %v", rss, err)
	}
	peak, err := procfs.PeakRSS(os.Getpid())
	if err != nil || peak < rss {
		t.Fatalf("PeakRSS = %d, %v; RSS is %d: the peak cannot be below it", peak, err, rss)
	}
	if _, err := procfs.PeakRSS(1 << 30); err == nil {
		t.Fatal("PeakRSS of a pid that does not exist succeeded")
	}
}
