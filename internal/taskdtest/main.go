package taskdtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// BuildForMain is Binary for a TestMain, which has no testing.TB: it builds the main
// package name (relative to the repository root) once per test process and returns the
// binary's path.
func BuildForMain(name string) (string, error) {
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "taskdtest-bin")
	})
	if buildErr != nil {
		return "", fmt.Errorf("taskdtest: %w", buildErr)
	}
	out := filepath.Join(buildDir, strings.ReplaceAll(name, "/", "_"))
	binMu.Lock()
	defer binMu.Unlock()
	if _, ok := built[name]; ok {
		return out, nil
	}
	cmd := exec.Command("go", "build", "-o", out, "./"+name)
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("taskdtest: go build ./%s: %v\n%s", name, err, b)
	}
	built[name] = struct{}{}
	return out, nil
}

// StartForMain runs taskd for a whole test binary, from TestMain (where Start, which needs
// a testing.TB, cannot be used): for example to serve the runnable Example functions of a
// package. yaml is the config without `listen`, as for Start. It returns once taskd is
// ready, with its address and a stop function that stops it with SIGTERM, waits for it
// (SIGKILL after 30s) and removes its directory; stop returns an error (with the daemon's
// logs) if taskd did not exit cleanly. Call stop before goleak checks run.
func StartForMain(yaml string) (addr string, stop func() error, err error) {
	bin, err := BuildForMain("cmd/taskd")
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "taskd")
	if err != nil {
		return "", nil, err
	}
	fail := func(err error) (string, func() error, error) {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("taskdtest: %w", err)
	}
	addr = "unix:" + filepath.Join(dir, "taskd.sock")
	cfg := filepath.Join(dir, "taskd.yaml")
	full := fmt.Sprintf("listen: [%q]\nlog: {level: debug, format: json}\n%s", addr, yaml)
	if err := os.WriteFile(cfg, []byte(full), 0o644); err != nil {
		return fail(err)
	}
	notify := filepath.Join(dir, "notify.sock")
	nconn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		return fail(err)
	}
	defer nconn.Close()

	logs := &syncBuffer{}
	cmd := exec.Command(bin, "-c", cfg)
	cmd.Dir = RepoRoot()
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitExit := func(timeout time.Duration) error {
		select {
		case err := <-exited:
			return err
		case <-time.After(timeout):
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("taskd did not exit within %s of SIGTERM", timeout)
		}
	}

	// READY=1 on the notify socket, as systemd would see it.
	ready := notified(nconn)
	select {
	case err := <-ready:
		if err != nil {
			_ = cmd.Process.Kill()
			<-exited
			return fail(fmt.Errorf("taskd did not report READY=1: %v\nlogs:\n%s", err, logs.String()))
		}
	case err := <-exited:
		return fail(fmt.Errorf("taskd exited before it was ready: %v\nlogs:\n%s", err, logs.String()))
	}

	stop = func() error {
		defer os.RemoveAll(dir)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := waitExit(30 * time.Second); err != nil {
			return fmt.Errorf("taskdtest: %v\nlogs:\n%s", err, logs.String())
		}
		return nil
	}
	return addr, stop, nil
}
