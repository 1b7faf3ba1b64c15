package client

import (
	"crypto/tls"
	"net"
	"time"

	"go.uber.org/zap"
)

// Config configures a Client. The zero value of every field means its default. New copies
// the Config; changing it afterwards has no effect, and New never writes into it.
type Config struct {
	// Addr is taskd's address: "unix:/abs/path.sock", "unix:///abs/path.sock",
	// "tcp://host:port" (plain TCP: taskd serves it on loopback only) or "tls://host:port"
	// (TLS, see Config.TLS). Empty means $TASKD_ADDR, else the documented default socket
	// (see wire.DefaultAddr). Addr names one daemon; Addrs names several. Setting both is
	// an error.
	Addr string

	// Addrs are the addresses of several taskd daemons serving the same interfaces (on
	// several hosts, or as Kubernetes pods): each as for Addr, or "dns://name:port" (every
	// A/AAAA record of name is a daemon at port, over tls:// when TLS is set, else tcp://)
	// or "dns+srv://_service._proto.name" (every SRV target is one), re-resolved every
	// ResolveEvery and after a daemon could not be reached. Each checkout, and each
	// one-shot Call, goes to one daemon, chosen by the power of two random choices on the
	// Client's own outstanding checkouts there, weighted by the spare workers each daemon
	// reported on its latest replies (DaemonStats.Spare); a daemon that cannot be reached, or
	// refuses the checkout as overloaded, drained or shutting down, is skipped for a while
	// (banned, with backoff) and the checkout is tried on another within its deadline. A
	// call that was sent is never tried again (see the package's docs, "Many daemons", and
	// docs/scaling.md). One address that is not dns:// or dns+srv:// is the same as Addr.
	Addrs []string

	// ResolveEvery is how often the dns:// and dns+srv:// addresses of Addrs are resolved
	// again (and, not more often than every MinResolveEvery, after a daemon could not be
	// reached). 0 means DefaultResolveEvery; values below MinResolveEvery are raised to it.
	ResolveEvery time.Duration

	// Resolver resolves the dns:// and dns+srv:// addresses of Addrs. nil means
	// net.DefaultResolver.
	Resolver *net.Resolver

	// Interface is the name of the interface (worker pool) to check workers out of. It may
	// be empty for a client used only for Ping, DaemonStatus and Reload; Checkout then
	// fails.
	Interface string

	// Name is how this application names itself to taskd: taskd logs it with what the
	// application does, and `taskctl checkouts` shows it beside the pid and uid of each
	// checkout's holder. Empty means the program's name (the base name of os.Args[0]).
	Name string

	// MaxWorkers caps the checkouts this Client holds at once; further Checkout calls wait,
	// served strictly first come, first served. 0 means no client-side cap (taskd's
	// max_workers still applies). With several daemons (Addrs), it caps the checkouts
	// held on all of them together (and one-shot calls while they run).
	MaxWorkers int

	// Timeout bounds every operation whose context has no deadline: each Checkout, Ping
	// and DaemonStatus, each call on a checkout (counted from Checkout.Go), and each
	// Client.Call as a whole (checkout and call together). 0 means DefaultTimeout (30s); a
	// negative value means no timeout. Reload, which may take longer, waits at least
	// DefaultReloadTimeout (see Client.Reload).
	Timeout time.Duration

	// MaxCheckouts retires a worker on Release once it has served this many checkouts
	// (counted by taskd, across all clients). 0 means never (taskd's max_checkouts still
	// applies).
	MaxCheckouts int

	// Conns is the most connections to taskd the Client opens: the first when it is first
	// needed, more while many checkouts are held or waiting at once (more than two per
	// connection), so that a busy Client's calls do not all pass through one connection,
	// one reader goroutine and one taskd session. A checkout's calls all travel on one
	// connection. 0 means GOMAXPROCS, at most 8; 1 keeps one connection.
	Conns int

	// KeepWorkerAfterError keeps a worker in the pool after one of its calls raised. By
	// default such a worker is retired on Release, in case the error left it in a bad state.
	KeepWorkerAfterError bool

	// Logger receives the log records workers send with their replies, and nothing else:
	// errors are returned, never logged. nil means zap.NewNop().
	Logger *zap.Logger

	// TLS configures TLS to a tls:// address: the CAs that taskd's certificate must chain
	// to (RootCAs; nil means the system's), the name it must be valid for (ServerName;
	// empty means the host of Addr), and the client certificate to present when taskd
	// requires one (Certificates; taskd's tls.client_ca_file). nil means a default
	// tls.Config: the system's roots and no client certificate. With a tcp:// address, a
	// TLS that is not nil makes the Client speak TLS too (for a TLS-terminating proxy);
	// with a unix socket it is ignored. It is cloned by New.
	TLS *tls.Config

	// Direct says whether held checkouts may be direct leases: DirectAuto (the zero value)
	// asks for one on every checkout made over a unix socket, and gets one when the worker
	// supports it; its calls then go to the worker over a private socketpair, not through
	// taskd, with the same results and errors. DirectOff relays every call through taskd.
	// TCP and TLS connections are always relayed. See docs/worker-protocol.md.
	Direct DirectMode

	// WarmFor is how long the direct lease of a one-shot call (Client.Call) stays with the
	// Client after the call, idle, for its next one-shot calls, which then go straight to
	// the worker without a round trip to taskd (a warm lease). taskd takes a warm lease
	// back whenever it wants the worker for anything else (another checkout waits, a
	// drain, a reload, recycling), after the call running on it if one is. 0 means
	// DefaultWarmFor; a negative value keeps no lease warm: every one-shot call goes to
	// taskd. Only with Direct DirectAuto, over a unix socket, to workers that take leases.
	WarmFor time.Duration
}
