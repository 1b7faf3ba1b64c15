package soak

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/taskd-dev/taskd/internal/procfs"
	"github.com/taskd-dev/taskd/internal/taskdproc"
	"github.com/taskd-dev/taskd/pkg/client"
)

// The soak's interfaces. go, raw and py serve the callers' checkouts; leak grows past
// max_rss; flood floods its stderr.
var ifaces = []struct {
	name, mode      string // mode: WorkerEnv, or "py" for the Python worker
	minIdle, maxW   int
	extra           string // more YAML keys, each line indented
	reloadsWithGens bool   // a reload changes its env: a new generation
}{
	{"go", "go", 2, 8, "", true},
	{"raw", "raw", 2, 6, "", true},
	{"py", "py", 2, 6, "", true},
	{"leak", "go", 1, 2, "    max_rss: 32MiB\n    recycle_jitter: 0%\n", false},
	{"flood", "flood", 1, 2, "", false},
}

// callTimeout is the interfaces' call_timeout; the stopper stops a worker for longer.
const callTimeout = time.Second

// daemon runs taskd for the soak: the config, the socket that survives restarts (held
// here, handed to each taskd as socket activation does), the metrics address, restarts
// and reloads. Its methods are safe for concurrent use.
type daemon struct {
	o       *Options
	dir     string
	record  string // the file record appends to
	metrics string // host:port of /metrics
	sock    *os.File
	python  string // "" leaves the py interface out
	cur     atomic.Pointer[taskdproc.Daemon]
	mu      sync.Mutex // serializes restarts and reloads; guards gen and orphans
	gen     int
	orphans []int // worker processes that outlived their daemon
	http    *http.Client
}

// newDaemon prepares the directory, the socket and the metrics address.
func newDaemon(o *Options, dir, python string) (*daemon, error) {
	d := &daemon{o: o, dir: dir, record: filepath.Join(dir, "record"), python: python, gen: 1,
		http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d.metrics = ln.Addr().String()
	ln.Close()
	path := filepath.Join(dir, "taskd.sock") // the listen address taskdproc writes
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	d.sock = os.NewFile(uintptr(fd), "taskd.socket")
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		d.sock.Close()
		return nil, fmt.Errorf("binding %s: %w", path, err)
	}
	if err := syscall.Listen(fd, 512); err != nil {
		d.sock.Close()
		return nil, err
	}
	return d, nil
}

// yaml is the config for generation gen, without `listen`.
func (d *daemon) yaml(gen int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "shutdown_grace: 1s\nmax_message_bytes: 1MiB\nmetrics_listen: %q\nlog: {level: info, format: json}\ninterfaces:\n", d.metrics)
	for _, f := range ifaces {
		g := 1
		if f.reloadsWithGens {
			g = gen
		}
		cmd := fmt.Sprintf("[%q]", d.o.WorkerBin)
		env := fmt.Sprintf("%s: %q, ", WorkerEnv, f.mode)
		if f.mode == "py" {
			if d.python == "" {
				continue
			}
			cmd = fmt.Sprintf("[%q, %q]", d.python, filepath.Join(d.o.Root, "internal", "soak", "worker.py"))
			env = ""
		}
		fmt.Fprintf(&b, "  %s:\n    command: %s\n    env: {%s%s: %q, SOAK_GEN: \"%d\"}\n", f.name, cmd, env, recordEnv, d.record, g)
		fmt.Fprintf(&b, "    min_idle: %d\n    max_workers: %d\n    max_queue: 1000\n    setup_timeout: 30s\n    call_timeout: %v\n    idle_timeout: 2s\n%s",
			f.minIdle, f.maxW, callTimeout, f.extra)
	}
	return b.String()
}

// start starts a taskd on the soak's socket with the current generation's config.
func (d *daemon) start(ctx context.Context) error {
	p, err := taskdproc.Start(ctx, taskdproc.Options{
		Bin: d.o.TaskdBin, YAML: d.yaml(d.gen), Dir: d.dir, WorkDir: d.dir,
		Sockets: []*os.File{d.sock}, ReadyTimeout: time.Minute,
	})
	if err != nil {
		return err
	}
	d.cur.Store(p)
	return nil
}

// current returns the running taskd.
func (d *daemon) current() *taskdproc.Daemon { return d.cur.Load() }

// restart stops the running taskd with sig (SIGTERM or SIGKILL), checks that its workers
// die with it, and starts a new one on the same socket.
func (d *daemon) restart(ctx context.Context, sig syscall.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.current()
	kids := taskdproc.Descendants(old.PID())
	_ = old.Signal(sig)
	select {
	case <-old.Exited():
	case <-time.After(30 * time.Second):
		_ = old.Signal(syscall.SIGKILL)
		<-old.Exited()
		return fmt.Errorf("taskd did not exit within 30s of %v; its log ends:\n%s", sig, old.LogTail(2000))
	}
	if sig == syscall.SIGTERM {
		if err := old.ExitErr(); err != nil {
			return fmt.Errorf("taskd exited with %v after SIGTERM; its log ends:\n%s", err, old.LogTail(2000))
		}
	}
	d.noteOrphans(kids)
	_ = old.Stop(time.Second) // reaps nothing more: closes its notify socket
	return d.start(ctx)
}

// noteOrphans waits up to 5s for pids, the processes of a daemon that has exited, to be
// gone, and records those that are not (and kills them).
func (d *daemon) noteOrphans(pids []int) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []int
		for _, p := range pids {
			if procfs.Alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}

		if time.Now().After(deadline) {
			for _, p := range left {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			d.orphans = append(d.orphans, left...)
			return
		}
		pids = left
		time.Sleep(20 * time.Millisecond)
	}
}

// reload writes the next generation's config and sends SIGHUP.
func (d *daemon) reload() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.current()
	d.gen++
	tmp := p.Config + ".new"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "listen: [%q]\n%s", p.Addr, d.yaml(d.gen)), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, p.Config); err != nil { // taskd never reads half a file
		return err
	}
	return p.Signal(syscall.SIGHUP)
}

// stop stops the last taskd (SIGTERM) and checks that no worker outlived it.
func (d *daemon) stop() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.current()
	kids := taskdproc.Descendants(p.PID())
	err := p.Stop(30 * time.Second)
	d.noteOrphans(kids)
	d.sock.Close()
	return err
}

// sample is what the soak measures of the daemon process.
type sample struct {
	FDs        int
	Goroutines int
	RSS        int64
}

// measure samples the running taskd: descriptors and RSS from /proc, goroutines from
// its metrics (go_goroutines).
func (d *daemon) measure(ctx context.Context) (sample, error) {
	p := d.current()
	var s sample
	var err error
	if s.FDs, err = procfs.OpenFDs(p.PID()); err != nil {
		return s, err
	}
	if s.RSS, err = procfs.RSS(p.PID()); err != nil {
		return s, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.metrics+"/metrics", nil)
	if err != nil {
		return s, err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return s, fmt.Errorf("reading taskd's metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return s, fmt.Errorf("go_goroutines %q: %w", v, err)
			}
			s.Goroutines = int(n)
			return s, nil
		}
	}
	return s, errors.New("taskd's metrics have no go_goroutines")
}

// settle waits until every interface is back to min_idle idle workers and nothing is
// starting or busy (idle_timeout retires the extra ones), so that two samples taken in
// that state compare.
func (d *daemon) settle(ctx context.Context, timeout time.Duration) error {
	c, err := client.New(client.Config{Addr: d.current().Addr, Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		st, err := c.DaemonStatus(ctx)
		if err == nil {
			var busy []string
			for _, is := range st.Interfaces {
				if is.Live != is.MinIdle || is.Idle != is.MinIdle || is.Retiring != 0 {
					busy = append(busy, fmt.Sprintf("%s: live %d idle %d busy %d starting %d retiring %d (min_idle %d)",
						is.Name, is.Live, is.Idle, is.Busy, is.Starting, is.Retiring, is.MinIdle))
				}
			}
			if len(busy) == 0 {
				return nil
			}
			last = strings.Join(busy, "; ")
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("taskd did not settle within %v: %s", timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// warm checks out every idle worker of every interface once (min_idle checkouts held at
// once), so that the workers the "before" sample counts have been used: taskd opens some
// descriptors of a worker (its /proc stat file) at its first checkout.
func (d *daemon) warm(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for _, f := range ifaces {
		if f.mode == "py" && d.python == "" {
			continue
		}
		c, err := client.New(client.Config{Addr: d.current().Addr, Interface: f.name, Timeout: 30 * time.Second})
		if err != nil {
			return err
		}
		defer c.Close()
		var held sync.WaitGroup
		held.Add(f.minIdle)
		for range f.minIdle {
			wg.Go(func() {
				co, err := c.Checkout(ctx)
				held.Done()
				if err != nil {
					errs <- err
					return
				}
				held.Wait() // all at once: each gets its own worker
				if err := co.Call(ctx, "who", nil, "warm"); err != nil {
					errs <- err
				}
				co.Release()
			})
		}
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// zombies returns the descendants of the running taskd that are zombies in three
// samples 200ms apart (a worker just killed is a zombie until taskd reaps it).
func (d *daemon) zombies() []int {
	count := map[int]int{}
	for i := range 3 {
		if i > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		for _, p := range taskdproc.Descendants(d.current().PID()) {
			if st, err := procfs.ReadStat(p); err == nil && st.State == 'Z' {
				count[p]++
			}
		}
	}
	var out []int
	for p, n := range count {
		if n == 3 {
			out = append(out, p)
		}
	}
	return out
}

// workers returns the pids of the running taskd's workers.
func (d *daemon) workers() []int { return procfs.Children(d.current().PID()) }
