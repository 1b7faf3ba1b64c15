package client_test

// These examples run against a real taskd, started by this package's TestMain
// (client_test.go) with one interface, "echo", served by the conformance suite's Go worker
// (internal/conformance/goworker: echo, fail, pid, sleep, spin, ...) and call_timeout: 1s.
// TestMain points $TASKD_ADDR at it, which is where a Config without Addr connects.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/taskd-dev/taskd/pkg/client"
)

// A transaction-style sequence of calls on one worker: every call of a checkout goes to
// the same worker process, so per-process state (an open transaction, a cursor, a warm
// cache) carries from one call to the next. Release gives the worker back.
func ExampleClient_Checkout() {
	c, err := client.New(client.Config{Interface: "echo"}) // Addr: $TASKD_ADDR
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	co, err := c.Checkout(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer co.Release()

	var pids []int
	for _, step := range []string{"begin", "insert ada", "insert grace", "commit"} {
		var echoed []string
		if err := co.Call(ctx, "echo", &echoed, step); err != nil {
			fmt.Println(err)
			return // the deferred Release retires the worker if the error requires it
		}
		var pid int
		if err := co.Call(ctx, "pid", &pid); err != nil {
			fmt.Println(err)
			return
		}
		pids = append(pids, pid)
		fmt.Println(echoed)
	}
	same := true
	for _, pid := range pids {
		same = same && pid == co.Worker().PID
	}
	fmt.Println("one worker process served every call:", same)
	// Output:
	// [begin]
	// [insert ada]
	// [insert grace]
	// [commit]
	// one worker process served every call: true
}

// A one-shot call checks out a worker, calls it and releases it. Results are decoded with
// encoding/json's rules; taskd relays numbers byte for byte, so an int64 result keeps every
// digit.
func ExampleClient_Call() {
	c, err := client.New(client.Config{Interface: "echo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var r []any
	if err := c.Call(ctx, "echo", &r, "hello", 42, map[string]bool{"ok": true}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r...)
	var big []int64
	if err := c.Call(ctx, "echo", &big, int64(1)<<53+1); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(big)
	// Output:
	// hello 42 map[ok:true]
	// [9007199254740993]
}

// CallIdempotent runs the call again on another worker if its worker is lost before it
// answers: only for methods that are safe to run twice.
func ExampleClient_CallIdempotent() {
	c, err := client.New(client.Config{Interface: "echo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var r []any
	if err := c.CallIdempotent(ctx, "echo", &r, "safe to repeat"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r...)
	fmt.Println("retries:", c.Stats().Retries)
	// Output:
	// safe to repeat
	// retries: 0
}

// Pipelining: send several calls on a checkout without waiting, then collect the results.
// They run one at a time, in order, on the checkout's worker.
func ExampleCheckout_Go() {
	c, err := client.New(client.Config{Interface: "echo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	co, err := c.Checkout(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer co.Release()

	var ps []*client.Pending
	for i := range 3 {
		ps = append(ps, co.Go("echo", i))
	}
	for _, p := range ps {
		var r []int
		if err := p.Wait(ctx, &r); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(r)
	}
	// Output:
	// [0]
	// [1]
	// [2]
}

// A call that raises in the worker returns a *RemoteError. The checkout stays usable, but
// the calls queued behind the failing one fail with ErrAborted instead of running, and on
// Release the worker is retired (unless Config.KeepWorkerAfterError).
func ExampleRemoteError() {
	c, err := client.New(client.Config{Interface: "echo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	co, err := c.Checkout(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer co.Release()

	failing := co.Go("fail", "no such user")
	behind := co.Go("echo", "never runs")

	var remote *client.RemoteError
	if err := failing.Wait(ctx, nil); errors.As(err, &remote) {
		fmt.Printf("%s.%s raised %s: %s\n", remote.Interface, remote.Method, remote.Type, remote.Message)
	}
	var r []string
	err = behind.Wait(ctx, &r)
	fmt.Println("queued behind it:", errors.Is(err, client.ErrAborted), r)
	err = co.Call(ctx, "echo", &r, "still usable")
	fmt.Println(r, err)
	// Output:
	// echo.fail raised ConformanceError: no such user
	// queued behind it: true []
	// [still usable] <nil>
}

// Reload makes taskd re-read its config file (the one it was started with) and apply it,
// as `taskctl reload` and `systemctl reload taskd` do. A file that is not valid changes
// nothing; an interface whose new workers cannot start keeps its old ones. (This example
// has no output to check: what a reload reports depends on the edits made to the file.)
func ExampleClient_Reload() {
	c, err := client.New(client.Config{}) // no Interface: an operator's client
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	// taskd answers once the reload is applied, when the new workers are ready: give it
	// as long as their setup may take.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := c.Reload(ctx)
	if errors.Is(err, client.ErrInvalidConfig) {
		fmt.Println(err) // lists every problem in the file, one per line
		return
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ic := range rep.Interfaces {
		switch ic.Change {
		case client.ChangeFailed:
			fmt.Printf("%s: new workers did not start, the old ones keep serving: %s\n", ic.Name, ic.Error)
		case client.ChangeUnchanged:
		default:
			fmt.Printf("%s: %s %v (generation %d)\n", ic.Name, ic.Change, ic.Keys, ic.Generation)
		}
	}
	if len(rep.NeedsRestart) > 0 {
		fmt.Println("restart taskd to apply:", rep.NeedsRestart)
	}
}

// explain shows how an application tells taskd's error kinds apart, and what it should do
// for each. Order matters where an error matches more than one: a checkout that could not
// reach taskd before its deadline matches ErrUnreachable and context.DeadlineExceeded, and
// ErrCallTimeout also matches ErrWorkerLost.
func explain(err error) string {
	var remote *client.RemoteError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &remote):
		// The worker raised. The checkout is still usable.
		return "remote error " + remote.Type + ": " + remote.Message
	case errors.Is(err, client.ErrUnreachable):
		// taskd did not answer before the deadline: is it running, at Config.Addr?
		var op *net.OpError
		return fmt.Sprintf("taskd unreachable (dial error carried: %v)", errors.As(err, &op))
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// The caller's deadline passed during a call: the worker was killed (a call cannot
		// be interrupted otherwise). Release the checkout and check out again.
		return "deadline passed during the call; worker killed"
	case errors.Is(err, client.ErrCallTimeout):
		// taskd's call_timeout (the hung-worker timeout) killed the worker.
		return "call_timeout in taskd; worker killed"
	case errors.Is(err, client.ErrWorkerLost):
		// The worker died, or the connection to taskd broke. Check out again.
		return "worker lost"
	case errors.Is(err, client.ErrAborted):
		// Checkout.Abort, or a call queued behind one that raised.
		return "aborted"
	case errors.Is(err, client.ErrInterfaceRemoved):
		// A reload removed the interface from taskd's config (this also matches
		// ErrUnknownInterface): stop using it.
		return "interface removed by a reload"
	case errors.Is(err, client.ErrUnknownInterface):
		// A configuration mismatch: the error lists the interfaces taskd serves.
		return "unknown interface"
	case errors.Is(err, client.ErrOverloaded):
		// taskd's queue for the interface is full (max_queue): back off and retry, or
		// raise max_queue/max_workers.
		return "overloaded"
	case errors.Is(err, client.ErrUnavailable):
		// The interface's workers cannot start (bad command, crash during setup,
		// setup_timeout); the error text quotes their stderr. taskd keeps retrying.
		return "unavailable"
	case errors.Is(err, client.ErrShuttingDown):
		// taskd is draining; a checkout waits for the restarted daemon until its deadline.
		return "shutting down"
	case errors.Is(err, client.ErrReleased), errors.Is(err, client.ErrClosed):
		// Using a checkout after Release, or a Client after Close: a bug in the caller.
		return "used after Release or Close"
	}
	return "unexpected: " + err.Error()
}

// Handling each kind of error. Fatal errors (a deadline, a lost worker, call_timeout,
// Abort) kill the worker and stick to the checkout: every later call on it returns the
// same error at once.
func Example_errors() {
	c, err := client.New(client.Config{Interface: "echo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// A remote error.
	fmt.Println("fail:", explain(c.Call(ctx, "fail", nil, "bad input")))

	// The caller's deadline passes during a call; the next call fails the same way, at once.
	co, err := c.Checkout(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	fmt.Println("sleep past the deadline:", explain(co.Call(short, "sleep", nil, 5000)))
	fmt.Println("next call on it:", explain(co.Call(ctx, "echo", nil)))
	co.Release()

	// taskd's call_timeout (1s in this daemon's config) kills a worker that hangs.
	co, err = c.Checkout(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("spin:", explain(co.Call(ctx, "spin", nil)))
	co.Release()

	// The application gives up on a checkout (AnyEvent::Task's throw_fatal_error).
	co, err = c.Checkout(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	co.Abort(errors.New("the user went away"))
	fmt.Println("after Abort:", explain(co.Call(ctx, "echo", nil)))
	co.Release()
	fmt.Println("after Release:", explain(co.Call(ctx, "echo", nil)))

	// Refusals.
	other, err := client.New(client.Config{Interface: "no-such-interface"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer other.Close()
	_, err = other.Checkout(ctx)
	fmt.Println("unknown interface:", explain(err))

	nowhere, err := client.New(client.Config{Addr: "unix:/nonexistent/taskd.sock", Interface: "echo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nowhere.Close()
	soon, cancelSoon := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelSoon()
	_, err = nowhere.Checkout(soon)
	fmt.Println("no daemon:", explain(err))
	// Output:
	// fail: remote error ConformanceError: bad input
	// sleep past the deadline: deadline passed during the call; worker killed
	// next call on it: deadline passed during the call; worker killed
	// spin: call_timeout in taskd; worker killed
	// after Abort: aborted
	// after Release: used after Release or Close
	// unknown interface: unknown interface
	// no daemon: taskd unreachable (dial error carried: true)
}
