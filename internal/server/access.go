package server

import (
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/wire"
)

// Who may call what (docs/security.md): the server's side of the config's per-interface
// allow, admin and hide_forbidden, and of the limits on client connections, max_clients
// and hello_timeout. Rules are checked once per checkout request (and per admin, status,
// logs or checkouts request), never per call: the relay does not look at them.

// guard holds the access rules as last applied and what enforcing them counts. It is
// made by New, lives as long as the server, and is safe for concurrent use.
type guard struct {
	rules        atomic.Pointer[accessRules] // replaced whole by a reload
	maxClients   atomic.Int64                // max_clients
	helloTimeout atomic.Int64                // hello_timeout, a time.Duration; ≤ 0: none
	users        *userCache

	forbidLog boundedSet    // (peer, interface) pairs whose refusal was logged
	lingering chan struct{} // a slot per refused connection lingering (lingerClose)

	// full rate-limits the log of connections refused over max_clients.
	fullMu      sync.Mutex
	fullLogged  time.Time
	fullRefused int // refused since fullLogged, not logged yet

	forbidden    *prometheus.CounterVec // checkouts refused by allow, by interface
	adminRefused prometheus.Counter
	connsRefused *prometheus.CounterVec // connections refused or closed, by reason
}

// accessRules are the compiled access keys of one config. Never changed once stored.
type accessRules struct {
	ifaces map[string]*rule // by interface name; nil (or absent): anyone
	admin  *rule            // nil: only the built-in admins (Peer.Admin)
	hide   bool             // hide_forbidden
}

// rule is an Access with its names resolved to ids.
type rule struct {
	show  *wire.Access // as status shows it
	uids  map[int]bool // users and uids
	gids  map[int]bool // groups and gids
	names map[string]bool
}

// Reasons a client connection is refused or closed before it was served
// (taskd_client_connections_refused_total's reason label).
const (
	refusedMaxClients   = "max_clients"
	refusedHelloTimeout = "hello_timeout"
)

const (
	// userCacheTTL is how long a peer user's name and groups are kept: a change of the
	// user database applies to checkouts this long after it at most.
	userCacheTTL = 30 * time.Second
	// userCacheMax bounds the users kept; forbidLogMax the refusals remembered as logged.
	userCacheMax = 4096
	forbidLogMax = 4096
	// fullLogEvery is how often at most a refusal over max_clients is logged.
	fullLogEvery = 10 * time.Second
	// refuseWriteWait bounds the write of a refusal on a new connection.
	refuseWriteWait = 100 * time.Millisecond
	// A refused connection lingers (lingerClose) at most lingerWait, reading at most
	// lingerMax bytes; at most maxLingering do at once.
	lingerWait   = time.Second
	lingerMax    = 64 << 10
	maxLingering = 64
)

func newGuard() *guard {
	return &guard{
		users:     newUserCache(lookupUser),
		forbidLog: boundedSet{max: forbidLogMax},
		lingering: make(chan struct{}, maxLingering),
		forbidden: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskd_checkouts_forbidden_total",
			Help: "Checkout requests refused because the interface's allow list does not name the peer."}, []string{"interface"}),
		adminRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "taskd_admin_refused_total",
			Help: "Admin requests (drain, resume, retire, kill, scale, reload) refused because the peer is not an admin."}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "taskd_client_connections_refused_total",
			Help: "Client connections refused (max_clients) or closed for sending no request in time (hello_timeout)."}, []string{"reason"}),
	}
}

func (g *guard) collectors() []prometheus.Collector {
	return []prometheus.Collector{g.forbidden, g.adminRefused, g.connsRefused}
}

// setAccess compiles cfg's access keys and applies them: to the next request of every
// connection, and to connections accepted from now on (max_clients, hello_timeout). A name
// that no longer resolves (the user database changed since cfg was validated) matches
// nobody, and is logged.
func (s *Server) setAccess(cfg config.Config) {
	rules := &accessRules{ifaces: make(map[string]*rule, len(cfg.Interfaces)), hide: cfg.HideForbidden}
	var errs []string
	compile := func(key string, a *config.Access) *rule {
		r, problems := compileRule(a)
		for _, p := range problems {
			errs = append(errs, key+": "+p)
		}
		return r
	}
	rules.admin = compile("admin", cfg.Admin)
	for name, ic := range cfg.Interfaces {
		rules.ifaces[name] = compile("interfaces."+name+".allow", ic.Allow)
	}
	for _, e := range errs {
		s.log.Warn("access rule names what does not resolve now; it matches nobody", zap.String("problem", e))
	}
	s.guard.rules.Store(rules)
	s.guard.maxClients.Store(int64(cfg.MaxClients))
	s.guard.helloTimeout.Store(int64(cfg.HelloTimeout))
}

// compileRule resolves a's names (nil: anyone); it returns what did not resolve.
func compileRule(a *config.Access) (*rule, []string) {
	if a == nil {
		return nil, nil
	}
	r := &rule{uids: map[int]bool{}, gids: map[int]bool{}, names: map[string]bool{},
		show: &wire.Access{Users: a.Users, Groups: a.Groups, UIDs: a.UIDs, GIDs: a.GIDs, TLSNames: a.TLSNames}}
	var problems []string
	for _, name := range a.Users {
		if uid, err := config.LookupUser(name); err != nil {
			problems = append(problems, err.Error())
		} else {
			r.uids[uid] = true
		}
	}
	for _, name := range a.Groups {
		if gid, err := config.LookupGroup(name); err != nil {
			problems = append(problems, err.Error())
		} else {
			r.gids[gid] = true
		}
	}
	for _, id := range a.UIDs {
		r.uids[id] = true
	}
	for _, id := range a.GIDs {
		r.gids[id] = true
	}
	for _, n := range a.TLSNames {
		r.names[n] = true
	}
	return r, problems
}

// allows reports whether r (nil: anyone) names the peer: its uid, its gid or one of its
// user's supplementary groups (on a unix socket), or a name of its verified TLS client
// certificate. A TCP peer without a certificate is allowed by a nil rule only.
func (g *guard) allows(r *rule, p Peer) bool {
	if r == nil {
		return true
	}
	if p.Unix && p.UID >= 0 {
		if r.uids[p.UID] || r.gids[p.GID] {
			return true
		}
		if len(r.gids) > 0 {
			for _, gid := range g.users.get(p.UID).gids {
				if r.gids[gid] {
					return true
				}
			}
		}
	}
	for _, n := range p.TLSNames {
		if r.names[n] {
			return true
		}
	}
	return false
}

// describe names the peer for errors and logs: its uid and user name, gid and process on
// a unix socket; its certificate's names and address over TLS.
func (g *guard) describe(p Peer) string {
	switch {
	case p.Unix && p.UID >= 0:
		s := fmt.Sprintf("uid %d", p.UID)
		if name := g.users.get(p.UID).name; name != "" {
			s += " (" + name + ")"
		}
		s += fmt.Sprintf(", gid %d", p.GID)
		if p.PID > 0 {
			s += fmt.Sprintf(", pid %d", p.PID)
			if p.Comm != "" {
				s += " (" + p.Comm + ")"
			}
		}
		return s
	case p.Unix:
		return "a unix socket peer whose credentials are unknown"
	case len(p.TLSNames) > 0:
		return fmt.Sprintf("TLS client %s at %s", strings.Join(p.TLSNames, ", "), p.Addr)
	}
	return fmt.Sprintf("tcp %s (no verified client certificate)", p.Addr)
}

// identity is the peer as far as access rules tell peers apart, for logging a refusal
// once per peer: its uid, its certificate's names, or its host.
func identity(p Peer) string {
	switch {
	case p.Unix:
		return fmt.Sprintf("uid:%d", p.UID)
	case len(p.TLSNames) > 0:
		return "tls:" + strings.Join(p.TLSNames, ",")
	}
	host, _, err := net.SplitHostPort(p.Addr)
	if err != nil {
		host = p.Addr
	}
	return "tcp:" + host
}

// mayUse reports whether the session's peer may check out interface iface.
func (ss *session) mayUse(iface string) bool {
	return ss.s.guard.allows(ss.s.guard.rules.Load().ifaces[iface], ss.peer)
}

// isAdmin reports whether the session's peer may make admin requests: root and taskd's
// own user on the unix socket always (Peer.Admin: they can signal taskd and edit its
// config anyway), and the peers that the config's admin names.
func (ss *session) isAdmin() bool {
	if ss.peer.Admin() {
		return true
	}
	r := ss.s.guard.rules.Load().admin
	return r != nil && ss.s.guard.allows(r, ss.peer)
}

// sees reports whether interface iface is shown to the session's peer (status,
// checkouts, logs, the names in errors): unless hide_forbidden, every interface is; with
// it, those the peer may use, and all of them to an admin.
func (ss *session) sees(iface string) bool {
	return !ss.s.guard.rules.Load().hide || ss.mayUse(iface) || ss.isAdmin()
}

// mayRead reports whether the session's peer may read the stderr lines of iface's
// workers: those of an interface it may use, and all of them if it is an admin. Unlike
// names, worker output is not shown to peers that may not use the interface.
func (ss *session) mayRead(iface string) bool {
	return ss.mayUse(iface) || ss.isAdmin()
}

// visibleNames lists the interfaces of tab that the peer sees, for error messages.
func (ss *session) visibleNames(tab *table) string {
	names := make([]string, 0, len(tab.names))
	for _, n := range tab.names {
		if ss.sees(n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "(none that this peer may see)"
	}
	return strings.Join(names, ", ")
}

// refuseForbidden refuses checkout request m if the peer may not use its interface, and
// reports whether it did. The refusal is forbidden, naming the interface and the peer;
// under hide_forbidden (to a peer that does not see the interface) it is the same
// unknown_interface as for a name that does not exist. The first refusal of each peer
// and interface is logged; every one is counted.
func (ss *session) refuseForbidden(m *wire.ClientMsg, tab *table) bool {
	if ss.mayUse(m.Iface) {
		return false
	}
	g := ss.s.guard
	g.forbidden.WithLabelValues(m.Iface).Inc()
	who := g.describe(ss.peer)
	if g.forbidLog.add(identity(ss.peer) + "\x00" + m.Iface) {
		ss.log.Warn("refused a checkout: the interface's allow list does not name the peer (logged once per peer and interface)",
			zap.String("interface", m.Iface), zap.String("who", who), zap.String("client", ss.clientName()))
	}
	if !ss.sees(m.Iface) {
		ss.send(&wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: wire.CodeUnknownInterface,
			Msg: fmt.Sprintf("unknown interface %q; this daemon serves: %s", m.Iface, ss.visibleNames(tab))})
		return true
	}
	ss.send(&wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: wire.CodeForbidden, Msg: forbiddenMsg(m.Iface, who, ss.peer)})
	return true
}

// forbiddenMsg says why peer p (described as who) may not use iface, and what would
// let it: what an allow list can name depends on how the peer connected.
func forbiddenMsg(iface, who string, p Peer) string {
	rule := fmt.Sprintf("interface %q may not be used by %s: its allow list (interfaces.%s.allow in taskd's config)", iface, who, iface)
	switch {
	case p.Unix:
		return rule + " does not name this user or its groups; run the program as an allowed user, or ask taskd's admin to allow it"
	case len(p.TLSNames) > 0:
		return rule + " names none of this client certificate's names under tls_names; connect with a certificate " +
			"whose SAN (DNS name or URI) allow.tls_names lists, or ask taskd's admin to add one of its names"
	}
	return rule + " cannot name a connection without a verified client certificate; connect over tls:// with a client " +
		"certificate (taskd needs tls.client_ca_file) whose name allow.tls_names lists, or over taskd's unix socket"
}

// filterStatus leaves out of st the interfaces that the peer does not see
// (hide_forbidden).
func (ss *session) filterStatus(st *wire.Status) {
	st.Interfaces = slices.DeleteFunc(st.Interfaces, func(is wire.InterfaceStatus) bool { return !ss.sees(is.Name) })
}

// filterCheckouts leaves out of list the checkouts of interfaces the peer does not see.
func (ss *session) filterCheckouts(list []wire.CheckoutInfo) []wire.CheckoutInfo {
	return slices.DeleteFunc(list, func(ci wire.CheckoutInfo) bool { return !ss.sees(ci.Interface) })
}

// filterLines leaves out of lines those of interfaces whose logs the peer may not read.
// It changes lines in place only if some go.
func (ss *session) filterLines(lines []wire.LogLine) []wire.LogLine {
	if !slices.ContainsFunc(lines, func(l wire.LogLine) bool { return !ss.mayRead(l.Iface) }) {
		return lines
	}
	return slices.DeleteFunc(slices.Clone(lines), func(l wire.LogLine) bool { return !ss.mayRead(l.Iface) })
}

// allowOf returns interface name's allow rule as status shows it (nil: anyone).
func (s *Server) allowOf(name string) *wire.Access {
	if r := s.guard.rules.Load().ifaces[name]; r != nil {
		return r.show
	}
	return nil
}

// refuseClient refuses a new connection because max_clients are open: it writes a fatal
// message saying so (without waiting for a client that does not read) and closes conn.
func (s *Server) refuseClient(conn net.Conn, open int) {
	g := s.guard
	g.connsRefused.WithLabelValues(refusedMaxClients).Inc()
	max := g.maxClients.Load()
	line, _ := wire.AppendClientMsg(nil, &wire.ClientMsg{T: wire.TFatal, Code: wire.CodeTooManyClients,
		Msg: fmt.Sprintf("taskd refuses this connection: it serves at most %d client connections at once (max_clients), and %d are open; "+
			"retry later, close idle connections, or raise max_clients", max, open)})
	_ = conn.SetWriteDeadline(time.Now().Add(refuseWriteWait))
	_, _ = conn.Write(line)
	s.lingerClose(conn)

	g.fullMu.Lock()
	g.fullRefused++
	now, n := time.Now(), g.fullRefused
	logIt := now.Sub(g.fullLogged) >= fullLogEvery
	if logIt {
		g.fullLogged, g.fullRefused = now, 0
	}
	g.fullMu.Unlock()
	if logIt {
		s.log.Warn("refusing client connections: max_clients are open (logged at most every 10s)",
			zap.Int64("max_clients", max), zap.Int("open", open), zap.Int("refused", n), zap.String("peer", describeAddr(conn)))
	}
}

// lingerClose closes a refused connection so that its client reads the refusal: a
// client writes its hello (and requests) as soon as it connects, and a socket closed
// with those unread, or before they are written, makes the client's write or read fail
// (EPIPE, ECONNRESET) before it has read why. So the write side is shut first, and what
// the client sends is read and dropped until it closes its end or lingerWait passes, on a
// goroutine of the server's. At most maxLingering connections linger at once; past that,
// conn is closed at once.
func (s *Server) lingerClose(conn net.Conn) {
	cw, ok := conn.(interface{ CloseWrite() error })
	select {
	case s.guard.lingering <- struct{}{}:
	default:
		ok = false
	}
	if !ok || cw.CloseWrite() != nil {
		if ok {
			<-s.guard.lingering
		}
		_ = conn.Close()
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.guard.lingering }()
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(lingerWait))
		_, _ = io.Copy(io.Discard, io.LimitReader(conn, lingerMax))
	}()
}

func describeAddr(conn net.Conn) string {
	if a := conn.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	return "unix socket"
}

// helloDeadline is when a new client connection must have sent its first request (zero:
// never), from hello_timeout.
func (s *Server) helloDeadline() time.Time {
	if d := time.Duration(s.guard.helloTimeout.Load()); d > 0 {
		return time.Now().Add(d)
	}
	return time.Time{}
}

// helloTimedOut ends a session that sent no request within hello_timeout.
func (ss *session) helloTimedOut() {
	ss.s.guard.connsRefused.WithLabelValues(refusedHelloTimeout).Inc()
	d := time.Duration(ss.s.guard.helloTimeout.Load())
	ss.log.Info("closing a client connection that sent no request within hello_timeout", zap.Duration("hello_timeout", d))
	ss.send(&wire.ClientMsg{T: wire.TFatal, Code: wire.CodeHelloTimeout,
		Msg: fmt.Sprintf("no request within %s of connecting (hello_timeout): taskd closes connections that do not speak; "+
			"send a request (a client sends its hello first) as soon as you connect", d)})
}

// boundedSet is a set of strings that forgets everything when it reaches max, so that
// its memory stays bounded whoever fills it. Safe for concurrent use.
type boundedSet struct {
	mu  sync.Mutex
	max int
	m   map[string]struct{}
}

// add adds k and reports whether it was new.
func (b *boundedSet) add(k string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.m[k]; ok {
		return false
	}
	if b.m == nil || len(b.m) >= b.max {
		b.m = make(map[string]struct{})
	}
	b.m[k] = struct{}{}
	return true
}

// builtinAdmins describes the admins that need no config, for refusals.
func builtinAdmins() string {
	return fmt.Sprintf("root and taskd's own user (uid %d) over the unix socket", os.Getuid())
}
