package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Discovery of daemons by DNS (Config.Addrs' dns:// and dns+srv:// addresses), for a
// Kubernetes headless Service (one A/AAAA record per ready pod) or any DNS that lists
// daemons. One goroutine, the resolver, owned by multi (stopped and waited for by Close),
// resolves every name at once, then every Config.ResolveEvery, and sooner (not more often
// than every MinResolveEvery) when a daemon could not be reached. An address found is a
// new daemon; one no longer found is marked vanished: it gets no new checkouts, its held
// ones finish, and it is closed at the first pass that finds it idle. A name that fails
// to resolve keeps the daemons it had (a DNS outage does not empty the Client); one that
// resolves to nothing (NXDOMAIN, no records) has none.

const (
	// DefaultResolveEvery is Config.ResolveEvery's default.
	DefaultResolveEvery = 30 * time.Second
	// MinResolveEvery is the shortest interval between two resolutions of Config.Addrs.
	MinResolveEvery = time.Second
	// resolveTimeout bounds one pass of the resolver.
	resolveTimeout = 5 * time.Second
)

// dnsTarget is one dns:// or dns+srv:// address of Config.Addrs.
type dnsTarget struct {
	raw  string // as given
	srv  bool   // dns+srv://: name is the whole SRV name
	name string
	port string // dns:// only
}

// isDNSAddr reports whether a is a dns:// or dns+srv:// address.
func isDNSAddr(a string) bool {
	return strings.HasPrefix(a, "dns://") || strings.HasPrefix(a, "dns+srv://")
}

// parseDNSAddr parses "dns://name:port" and "dns+srv://_service._proto.name".
func parseDNSAddr(a string) (dnsTarget, error) {
	if rest, ok := strings.CutPrefix(a, "dns+srv://"); ok {
		if !strings.HasPrefix(rest, "_") || strings.Count(strings.TrimSuffix(rest, "."), ".") < 2 || strings.ContainsAny(rest, ":/") {
			return dnsTarget{}, fmt.Errorf("address %q: want dns+srv://_service._proto.name, such as dns+srv://_taskd._tcp.taskd.default.svc.cluster.local", a)
		}
		return dnsTarget{raw: a, srv: true, name: rest}, nil
	}
	rest := strings.TrimPrefix(a, "dns://")
	host, port, err := net.SplitHostPort(rest)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return dnsTarget{}, fmt.Errorf("address %q: want dns://name:port, such as dns://taskd.default.svc.cluster.local:7070", a)
	}
	return dnsTarget{raw: a, name: host, port: port}, nil
}

// resolver is multi's DNS goroutine (run).
type resolver struct {
	m       *multi
	targets []dnsTarget
	r       *net.Resolver
	every   time.Duration
	kick    chan struct{} // cap 1: resolve soon (soon)

	mu   sync.Mutex
	err  error // the last pass's errors, if any
	last time.Time
}

func newResolver(m *multi, targets []dnsTarget) *resolver {
	r := &resolver{m: m, targets: targets, r: m.cfg.Resolver, every: m.cfg.ResolveEvery, kick: make(chan struct{}, 1)}
	if r.r == nil {
		r.r = net.DefaultResolver
	}
	if r.every == 0 {
		r.every = DefaultResolveEvery
	}
	r.every = max(r.every, MinResolveEvery)
	return r
}

// soon asks for a pass as soon as MinResolveEvery allows. It never blocks.
func (r *resolver) soon() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *resolver) lastErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// run resolves until the Client is closed.
func (r *resolver) run() {
	defer r.m.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-r.m.ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
			if wait := MinResolveEvery - time.Since(last); wait > 0 {
				t.Reset(wait) // not sooner than the floor after the last pass
				continue
			}
		}
		last = time.Now()
		r.pass()
		t.Reset(r.every)
	}
}

// found is a daemon address a target resolved to.
type found struct{ addr, serverName string }

// pass resolves every target once and applies the result.
func (r *resolver) pass() {
	ctx, cancel := context.WithTimeout(r.m.ctx, resolveTimeout)
	defer cancel()
	var errs []error
	for _, t := range r.targets {
		fs, err := r.resolve(ctx, t)
		if err != nil {
			errs = append(errs, fmt.Errorf("resolving %s: %w", t.raw, err))
			continue // keep what it had
		}
		r.m.apply(t.raw, fs)
	}
	r.mu.Lock()
	r.err = errors.Join(errs...)
	r.mu.Unlock()
	r.m.closeVanished()
}

// resolve returns the daemons target t names now. A name that does not exist, or has no
// records, names none.
func (r *resolver) resolve(ctx context.Context, t dnsTarget) ([]found, error) {
	scheme := "tcp://"
	if r.m.cfg.TLS != nil {
		scheme = "tls://"
	}
	type hostPort struct{ host, port string }
	var hps []hostPort
	if t.srv {
		_, srvs, err := r.r.LookupSRV(ctx, "", "", t.name)
		if notFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		for _, s := range srvs {
			hps = append(hps, hostPort{strings.TrimSuffix(s.Target, "."), strconv.Itoa(int(s.Port))})
		}
	} else {
		hps = append(hps, hostPort{t.name, t.port})
	}
	var fs []found
	for _, hp := range hps {
		ips, err := r.r.LookupIPAddr(ctx, hp.host)
		if notFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, ip := range ips {
			fs = append(fs, found{addr: scheme + net.JoinHostPort(ip.IP.String(), hp.port), serverName: strings.TrimSuffix(hp.host, ".")})
		}
	}
	return fs, nil
}

func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// apply makes the daemons found for target (raw) the daemons of it: new ones are added,
// vanished ones come back, and the others vanish.
func (m *multi) apply(raw string, fs []found) {
	m.mu.Lock()
	var add []found
	for _, f := range fs {
		if !slices.ContainsFunc(m.daemons, func(d *daemon) bool { return d.from == raw && d.addr == f.addr }) &&
			!slices.Contains(add, f) {
			add = append(add, f)
		}
	}
	for _, d := range m.daemons {
		if d.from == raw {
			d.vanished = !slices.ContainsFunc(fs, func(f found) bool { return f.addr == d.addr })
		}
	}
	m.mu.Unlock()
	for _, f := range add {
		d, err := m.newDaemon(f.addr, f.serverName)
		if err != nil {
			continue // an address the resolver made cannot be invalid; skip it if it is
		}
		d.from = raw
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			d.c.Close()
			return
		}
		m.daemons = append(m.daemons, d)
		m.mu.Unlock()
	}
}

// closeVanished closes and forgets the vanished daemons with nothing outstanding.
func (m *multi) closeVanished() {
	m.mu.Lock()
	var vs []*daemon
	for _, d := range m.daemons {
		if d.vanished {
			vs = append(vs, d)
		}
	}
	m.mu.Unlock()
	for _, d := range vs {
		if d.c.outstanding() > 0 {
			continue
		}
		m.mu.Lock()
		gone := d.vanished && !m.closed
		if gone {
			m.daemons = slices.DeleteFunc(m.daemons, func(x *daemon) bool { return x == d })
		}
		m.mu.Unlock()
		if gone {
			d.c.Close() // a checkout that picked it just before fails with ErrClosed and goes on (multi.do)
		}
	}
}
