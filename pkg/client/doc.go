// Package client is the Go SDK for applications that use taskd: it checks out workers
// of one interface and calls their methods.
//
// A Client stands for one interface of one daemon (or of several: see Many daemons). A Checkout is exclusive use of one
// worker process: every call made on it goes to that process, in order, so per-process
// state (a database transaction, a cursor, a warm cache) carries from call to call. Release
// gives the worker back; taskd then pools it or retires it. Client.Call is the one-shot
// form for calls that need no such state: it sends the call with the checkout request,
// and taskd releases the worker itself once the call is answered, so it costs one round
// trip.
//
//	c, err := client.New(client.Config{Interface: "passwd"})
//	...
//	defer c.Close()
//	var hashed string
//	err = c.Call(ctx, "hash", &hashed, "secret")
//
// # Ownership and concurrency
//
// Client, Checkout and Pending are safe for concurrent use. The Client owns its
// connections to taskd — one while few checkouts are held or waiting, more (up to
// Config.Conns) while many are, so that a busy Client's calls do not all pass through one
// connection and one reader; a checkout's calls all travel on one connection — and the
// goroutines behind them: per connection slot a manager that dials when the slot is needed
// (lazily: New never dials) and redials with a short capped backoff after a failure, and
// per connection a reader that dispatches every reply and a writer. A call on a held
// Checkout takes only that Checkout's lock. Requests are written by the goroutine
// that makes them when the socket takes them at once (the common case), and by the writer
// only when it does not. Close stops them all and waits for them. The caller owns each
// Checkout it gets and must Release it; a Checkout keeps counting against
// Config.MaxWorkers until then.
//
// The daemon need not be running when the Client is created or when Checkout is called:
// checkouts wait (until their deadline) while the Client keeps dialling, and a checkout
// request that was in flight when the connection broke, or that a draining daemon
// refused, is sent again on the next connection: restarting taskd is invisible to
// waiting checkouts.
// Checkouts held when the connection breaks fail with ErrWorkerLost, since taskd releases
// the workers of a closed connection.
//
// # Direct leases
//
// Over a unix socket, a held checkout of a worker whose SDK supports it is a direct lease
// (Config.Direct, on by default): taskd hands the Checkout a private socketpair to the
// worker with the grant, and its calls go over it, not through taskd (one hop instead of
// two). Results, errors, pipelining and the ep rule are those of a relayed checkout;
// Release, Abort and a caller giving up on a call still go to taskd, which ends the lease
// or cancels the call on the worker, and taskd's lost message says why a worker went
// (call_timeout, a kill). A direct Checkout has no goroutine of its own: the caller waiting
// for an answer reads the pair, handing other calls' answers to their Pendings
// (direct.go). One-shot calls, TCP and TLS connections, and workers without lease support
// are relayed.
//
// # Many daemons
//
// With Config.Addrs naming several daemons (listed, or found by DNS with dns:// and
// dns+srv://, re-resolved every Config.ResolveEvery), a Client keeps one Client of one
// daemon per daemon, as above, and delegates to them:
//
//   - Balanced: each Checkout and each one-shot Call goes to one daemon, chosen by the
//     power of two random choices: the daemon with more workers to spare (as it reported
//     on its latest grant or one-shot answer, corrected by this Client's checkouts taken
//     and given back there since), or, alike, with fewer of the Client's checkouts held
//     or waiting there.
//     A Checkout then stays with the daemon that granted it: its calls, Abort and Release
//     go there (lease affinity).
//   - Failed over: a checkout (or one-shot call) that the daemon did not act on — it
//     could not be reached (refused connection, dial timeout), or refused the checkout as
//     overloaded, drained (ErrDraining) or shutting down — is tried on another daemon,
//     within the same deadline. That daemon is banned for new checkouts for a while
//     (100ms, doubling up to 5s, with jitter); a daemon that says it is draining on a
//     grant is banned too. When every daemon is banned the bans are ignored: the Client
//     never stops serving because of them. While every daemon is down, a checkout waits
//     for one until its deadline, as with one daemon. A daemon that has left a request
//     waiting 1s is pinged: if it does not answer within 1s (it is stopped or wedged) it
//     is banned too (DaemonStats.Stalls), and a checkout waiting there moves to another
//     daemon; a one-shot call waits on (it may run there) and its error says so.
//   - Never retried: a call that was sent. Calls on a held Checkout whose daemon is lost
//     fail with ErrWorkerLost; a one-shot call that may have reached a daemon fails as
//     with one daemon. CallIdempotent runs such a call again (on any daemon) as before.
//   - Config.MaxWorkers caps the checkouts held on all daemons together (first come,
//     first served). Ping and DaemonStatus ask the first daemon that answers (in the order of
//     Addrs, banned ones last); Reload, the admin requests (Drain, Scale…), Checkouts and
//     Logs are about one daemon and fail with ErrPerDaemon: make a Client of that daemon
//     (Config.Addr) for them. Stats adds a row per daemon (Stats.Daemons).
//
// A daemon that a dns:// name no longer resolves to gets no new checkouts; its held ones
// finish, and it is then closed. See docs/scaling.md.
//
// # Retries
//
// A call that may have reached a worker is never sent twice on the Client's own
// initiative: a one-shot call whose worker was lost (or whose connection broke) after it
// was sent fails with ErrWorkerLost, since it may or may not have run. The caller who
// knows that a method is safe to run twice says so with CallIdempotent, which runs such a
// call again on a fresh checkout (after a daemon restart too) within one deadline, and
// counts it in Stats.Retries. The choice is the caller's, per call: only the caller knows
// what a second run would do, and after a daemon restart no one else is left to decide.
// Calls on a held Checkout are never retried: they share the worker's state.
//
// # Errors
//
// Every error can be matched with errors.Is or errors.As, and its text says what to do next.
//
//   - *RemoteError: the call raised in the worker. The checkout stays usable, but the
//     calls made on it before the caller was given that error (pipelined with Go behind
//     the failing one) do not run: they fail with ErrAborted, whatever the timing. Calls
//     made after it run normally. On Release the worker is retired (unless
//     Config.KeepWorkerAfterError).
//   - Fatal errors stick to the checkout: every later call returns the same error at once,
//     and no success is delivered after it. They are ErrWorkerLost (the worker exited or
//     the connection to taskd broke), ErrCallTimeout (a call ran past taskd's
//     call_timeout; also ErrWorkerLost), ErrProtocol (the worker broke the protocol), a
//     caller deadline or cancellation during a call (matches context.DeadlineExceeded or
//     context.Canceled), and Checkout.Abort (matches ErrAborted and the error given to
//     Abort). The call returns at once; taskd sends the worker a cancel for what it still
//     runs and retires it, killing it if it has not answered within the interface's
//     cancel_grace. A worker is never reused after a fatal error.
//   - Refusals: ErrUnknownInterface, ErrInterfaceRemoved (a reload removed the interface;
//     also matches ErrUnknownInterface), ErrOverloaded (taskd's queue is full), ErrUnavailable
//     (the interface's workers cannot start; the text carries their stderr tail), and
//     ErrUnreachable (taskd could not be reached before the deadline; the error also wraps
//     the last dial error). A checkout refused because taskd is shutting down waits for
//     the next daemon (a restart) instead, and fails with ErrShuttingDown only if its
//     deadline passes first.
//   - ErrInvalidConfig: Client.Reload was refused because taskd's config file is not
//     valid (nothing changed); the text lists the problems.
//   - ErrReleased after Release, ErrClosed after Close.
//
// # Results
//
// Arguments are encoded with encoding/json. A result is decoded into the value the caller
// passes (nil discards it, *json.RawMessage keeps the raw JSON) with encoding/json's rules,
// and taskd relays numbers byte for byte: an int64 above 2^53 survives the round trip into
// an int64, json.Number or json.RawMessage result (inside an interface{} it becomes a
// float64, as encoding/json does).
//
// # Worker logs
//
// Log records a worker makes during a call travel back with the reply and are written to
// Config.Logger before the call returns, in order, with the fields interface, worker, pid,
// method and worker_ts (the worker's timestamp) plus the record's own fields.
//
// # Operating taskd
//
// Ping, DaemonStatus and Reload are for operators (taskctl is built on them) and need no
// Config.Interface. Reload makes taskd re-read its config file and apply it; taskd
// answers with a ReloadReport once the change is applied.
//
// The wire protocol is documented in docs/client-protocol.md.
package client
