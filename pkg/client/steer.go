package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/taskd-dev/taskd/internal/wire"
)

// Steering a live daemon: admin requests that drain and resume an interface, retire or
// kill a worker, and scale a pool. taskd allows them (and Reload) only to root and to
// taskd's own user, connected over its unix socket; to anyone else it answers
// ErrNotPermitted. Like Ping, each fails at once if taskd cannot be dialled, and waits
// for its answer at most Config.Timeout when ctx has no deadline. Each returns taskd's
// one-line account of what it did, for a human.

// Errors of the admin requests, and of the checkouts of a drained interface.
var (
	// ErrDraining: an admin drained the interface (Client.Drain, taskctl drain), so taskd
	// refuses new checkouts of it, and fails the waiting ones, until it is resumed. Unlike
	// ErrShuttingDown it is final: the checkout does not wait, and is not retried.
	ErrDraining = errors.New("client: interface drained by an admin")

	// ErrNotPermitted: the request is an admin request (drain, resume, retire, kill,
	// scale, reload) and the client is not an admin: root or taskd's own user on its unix
	// socket, or a peer that taskd's admin setting names (a plain TCP client never is).
	// Read-only requests, such as DaemonStatus, are open to all.
	ErrNotPermitted = errors.New("client: admin request not permitted")

	// ErrUnknownWorker: RetireWorker or KillWorker named no worker of the daemon's.
	ErrUnknownWorker = errors.New("client: unknown worker")

	// ErrInvalidRequest: taskd refused an admin request as not valid (a scale with
	// max_workers below 1 or min_idle above it, say, or an op that this taskd does not
	// know); nothing changed.
	ErrInvalidRequest = errors.New("client: invalid admin request")
)

// steerSentinels is sentinelsFor for the codes of the admin requests; nil for another code.
func steerSentinels(code string) ([]error, string) {
	switch code {
	case wire.CodeDraining:
		return []error{ErrDraining}, "an admin drained it (taskctl drain): wait for `taskctl resume`, or use another interface"
	case wire.CodeNotPermitted:
		return []error{ErrNotPermitted}, "run it as root or as taskd's user over taskd's unix socket, or as a user that taskd's admin setting names"
	case wire.CodeUnknownWorker:
		return []error{ErrUnknownWorker}, "taskctl status lists the workers by id and pid; the worker may have ended meanwhile"
	case wire.CodeInvalidRequest:
		return []error{ErrInvalidRequest}, "nothing changed; fix the request"
	}
	return nil, ""
}

// steer sends admin request op and returns taskd's account of what it did.
func (c *Client) steer(ctx context.Context, req wire.ClientMsg) (string, error) {
	req.T = ""
	m, _, err := c.admin(ctx, adminOp{t: wire.TAdmin, timeout: c.timeout, req: req,
		slow: "a taskd older than this client does not answer admin requests"})
	if err != nil {
		return "", err
	}
	if m.T != wire.TAdminOK {
		return "", &wrapped{text: fmt.Sprintf("%v: taskd answered %s with %s instead of adminok; this is a daemon bug", ErrProtocol, req.Op, m.T), errs: []error{ErrProtocol}}
	}
	return m.Msg, nil
}

// Drain makes taskd stop granting new checkouts of interface iface: waiting and new
// checkout requests fail at once with ErrDraining, while the checkouts already held go on
// until they are released. Its workers keep running (min_idle stay ready), so that Resume
// serves at once. A drain lasts until Resume, across reloads; a reload that removes the
// interface, or a shutdown, works as usual. It fails with ErrUnknownInterface for an
// interface that taskd does not serve.
func (c *Client) Drain(ctx context.Context, iface string) (string, error) {
	return c.steer(ctx, wire.ClientMsg{Op: wire.OpDrain, Iface: iface})
}

// Resume undoes Drain: taskd grants checkouts of iface again. Resuming an interface that
// is not drained is not an error.
func (c *Client) Resume(ctx context.Context, iface string) (string, error) {
	return c.steer(ctx, wire.ClientMsg{Op: wire.OpResume, Iface: iface})
}

// RetireWorker asks taskd to retire one worker, named by its id (such as "passwd-3") or
// its pid, as DaemonStatus lists them. An idle worker is retired now, and a busy one when
// its checkout is released (the checkout goes on undisturbed); in both cases the pool
// starts a replacement if it needs one, before the old worker stops. Its exit is counted
// under ExitAdmin. It fails with ErrUnknownWorker if taskd has no such worker.
func (c *Client) RetireWorker(ctx context.Context, worker string) (string, error) {
	return c.steer(ctx, wire.ClientMsg{Op: wire.OpRetire, Worker: worker})
}

// KillWorker asks taskd to kill one worker now (SIGKILL to its process group), named as
// for RetireWorker. If it is checked out, its checkout is lost: its calls fail with
// ErrWorkerLost. The pool replaces it as needed; its exit is counted under ExitAdmin.
func (c *Client) KillWorker(ctx context.Context, worker string) (string, error) {
	return c.steer(ctx, wire.ClientMsg{Op: wire.OpKill, Worker: worker})
}

// Scale sets interface iface's min_idle and max_workers in taskd, live, until the next
// reload, which applies the config file's values again (even if the file did not
// change). maxWorkers must be at least 1 and minIdle between 0 and maxWorkers; otherwise
// Scale fails with ErrInvalidRequest without asking taskd. Lowering max_workers retires
// idle workers above it now and busy ones when released; raising min_idle starts workers.
func (c *Client) Scale(ctx context.Context, iface string, minIdle, maxWorkers int) (string, error) {
	if maxWorkers < 1 || minIdle < 0 || minIdle > maxWorkers {
		return "", &wrapped{text: fmt.Sprintf("%v: scale %s: min_idle %d, max_workers %d: max_workers must be at least 1, and min_idle between 0 and max_workers",
			ErrInvalidRequest, iface, minIdle, maxWorkers), errs: []error{ErrInvalidRequest}}
	}
	return c.steer(ctx, wire.ClientMsg{Op: wire.OpScale, Iface: iface, MinIdle: minIdle, MaxWorkers: maxWorkers})
}
