package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/taskd-dev/taskd/internal/procfs"
	"github.com/taskd-dev/taskd/pkg/client"
)

// daemon is a taskd process started by the suite with one interface, "echo".
type daemon struct {
	cmd     *exec.Cmd
	dir     string // temporary: config, socket, log
	addr    string
	logPath string
	started time.Time
	exited  chan struct{}
	waitErr error
}

// startDaemon writes a config with an "echo" interface served by echoBin and starts taskdBin
// with it. It returns once taskd answers Ping (polled on a fresh connection each time,
// every millisecond); ready is the time from the start of the process until then.
func startDaemon(ctx context.Context, taskdBin, echoBin string, minIdle, maxWorkers int) (*daemon, time.Duration, error) {
	dir, err := os.MkdirTemp("", "taskd-bench")
	if err != nil {
		return nil, 0, err
	}
	d := &daemon{dir: dir, addr: "unix:" + filepath.Join(dir, "taskd.sock"), logPath: filepath.Join(dir, "taskd.log"),
		exited: make(chan struct{})}
	cfg := fmt.Sprintf(`listen: [%q]
metrics_listen: ""
interfaces:
  echo:
    command: [%q]
    min_idle: %d
    max_workers: %d
`, d.addr, echoBin, minIdle, maxWorkers)
	cfgPath := filepath.Join(dir, "taskd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, 0, err
	}
	logf, err := os.Create(d.logPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, 0, err
	}
	defer logf.Close() // the child has its own descriptor
	d.cmd = exec.Command(taskdBin, "-c", cfgPath)
	d.cmd.Dir = dir
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.started = time.Now()
	if err := d.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, 0, fmt.Errorf("bench: starting taskd: %w", err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	err = d.poll(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		c, err := client.New(client.Config{Addr: d.addr})
		if err != nil {
			return false, err
		}
		defer c.Close()
		_, err = c.Ping(ctx)
		return err == nil, nil
	})
	if err != nil {
		return nil, 0, errors.Join(fmt.Errorf("bench: waiting for taskd to answer ping: %w", err), d.stop())
	}
	return d, time.Since(d.started), nil
}

// waitIdle polls the daemon's status (every millisecond) until interface "echo" has at
// least n idle workers and returns the time since the daemon was started.
func (d *daemon) waitIdle(ctx context.Context, n int, timeout time.Duration) (time.Duration, error) {
	c, err := client.New(client.Config{Addr: d.addr})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	err = d.poll(ctx, timeout, func(ctx context.Context) (bool, error) {
		st, err := c.DaemonStatus(ctx)
		if err != nil {
			return false, err
		}
		for _, is := range st.Interfaces {
			if is.Name == "echo" && is.Idle >= n {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return 0, fmt.Errorf("bench: waiting for %d idle echo workers: %w", n, err)
	}
	return time.Since(d.started), nil
}

// poll calls check every millisecond until it reports true, returns an error, the daemon
// exits, or timeout passes.
func (d *daemon) poll(ctx context.Context, timeout time.Duration, check func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := check(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-d.exited:
			return fmt.Errorf("taskd exited (%v); its log:\n%s", d.waitErr, d.logTail())
		case <-ctx.Done():
			return fmt.Errorf("%w; taskd's log:\n%s", ctx.Err(), d.logTail())
		case <-tick.C:
		}
	}
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// workers returns the pids of the daemon's worker processes (its children).
func (d *daemon) workers() []int { return procfs.Children(d.pid()) }

func (d *daemon) logTail() string {
	b, _ := os.ReadFile(d.logPath)
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return s
}

// stop sends SIGTERM, waits for taskd to exit (SIGKILL after 15s) and removes its
// directory. It reports an exit that was not clean, and workers that outlived taskd (which
// it then kills).
func (d *daemon) stop() error {
	defer os.RemoveAll(d.dir)
	kids := d.workers()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	var err error
	select {
	case <-d.exited:
		if d.waitErr != nil {
			err = fmt.Errorf("bench: taskd exited with %v; its log:\n%s", d.waitErr, d.logTail())
		}
	case <-t.C:
		_ = d.cmd.Process.Kill()
		<-d.exited
		err = errors.New("bench: taskd did not stop within 15s of SIGTERM; killed")
	}
	for _, p := range kids {
		if procfs.Alive(p) {
			_ = syscall.Kill(p, syscall.SIGKILL)
			err = errors.Join(err, fmt.Errorf("bench: worker %d outlived taskd; killed", p))
		}
	}
	return err
}
