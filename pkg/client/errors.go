package client

import (
	"errors"
	"fmt"
	"strings"

	"github.com/taskd-dev/taskd/internal/wire"
)

// Sentinel errors. Every error this package returns matches at most a few of these with
// errors.Is; the concrete error's text adds what happened and what to do next.
var (
	// ErrAborted: a call did not run because an earlier call on the same checkout raised
	// (the checkout stays usable), or the checkout was aborted with Checkout.Abort (fatal).
	ErrAborted = errors.New("client: aborted")

	// ErrWorkerLost: the checkout's worker is gone (it exited, was killed, or the connection
	// to taskd was lost). Fatal for the checkout.
	ErrWorkerLost = errors.New("client: worker lost")

	// ErrCallTimeout: a call ran past the daemon's call_timeout: taskd cancelled it and
	// retires the worker (killed unless it answers within cancel_grace). It also matches
	// ErrWorkerLost.
	ErrCallTimeout error = &childError{msg: "client: call timed out in taskd (call_timeout)", parent: ErrWorkerLost}

	// ErrReleased is returned by every method of a checkout after Release.
	ErrReleased = errors.New("client: checkout released")

	// ErrClosed is returned after Client.Close, and fails checkouts that were queued or held
	// when the client was closed.
	ErrClosed = errors.New("client: client closed")

	// ErrUnknownInterface: taskd has no interface of that name (or Config.Interface is empty).
	ErrUnknownInterface = errors.New("client: unknown interface")

	// ErrInterfaceRemoved: a reload removed the interface from taskd's config, so taskd
	// refuses new checkouts of it (its checkouts held at the reload finish normally). It
	// also matches ErrUnknownInterface. Like that error it is final: the checkout is not
	// retried.
	ErrInterfaceRemoved error = &childError{msg: "client: interface removed by a reload", parent: ErrUnknownInterface}

	// ErrInvalidConfig: taskd refused a reload (Client.Reload) because its config file is
	// not valid; nothing changed, and taskd runs on with the config it had. The error's
	// text lists every problem taskd found, one per line.
	ErrInvalidConfig = errors.New("client: reload refused: the config file is not valid; nothing changed")

	// ErrOverloaded: the interface's queue in taskd is full (max_queue).
	ErrOverloaded = errors.New("client: interface overloaded")

	// ErrUnavailable: the interface's workers cannot start; the error text carries the tail
	// of the worker's stderr as reported by taskd.
	ErrUnavailable = errors.New("client: interface unavailable")

	// ErrUnreachable: taskd could not be reached before the deadline. The error also wraps
	// the last dial (or connection) error, so errors.As finds e.g. a *net.OpError.
	ErrUnreachable = errors.New("client: taskd unreachable")

	// ErrShuttingDown: taskd is draining and refuses new requests. A checkout waits for
	// the restarted daemon and fails with this error only when its deadline passes.
	ErrShuttingDown = errors.New("client: taskd is shutting down")

	// ErrForbidden: the interface's allow list in taskd's config does not name this
	// client's user (its uid, its groups) or its TLS client certificate, so taskd refuses
	// its checkouts (and one-shot calls, and the logs of the interface). Final: the
	// checkout is not retried. The error's text names the interface and the identity
	// taskd saw.
	ErrForbidden = errors.New("client: forbidden by the interface's allow list")

	// ErrProtocol: the client protocol or the worker protocol was broken (by taskd, by this
	// client, or by a worker). A worker protocol error also matches ErrWorkerLost. A call
	// whose arguments are not valid UTF-8 (possible only through a json.RawMessage) fails
	// with it too, without running; its checkout stays usable.
	ErrProtocol = errors.New("client: protocol error")
)

// childError is a sentinel that also matches a parent sentinel.
type childError struct {
	msg    string
	parent error
}

func (e *childError) Error() string        { return e.msg }
func (e *childError) Is(target error) bool { return target == e.parent }

// RemoteError is a call that raised in the worker. The checkout that made the call stays
// usable; on Release its worker is retired unless Config.KeepWorkerAfterError is set.
type RemoteError struct {
	Interface string // the interface the call went to
	Method    string // the method called; "" for a function-style call
	Message   string // the worker's error message
	Type      string // the worker's error type or class, if it sent one
	Trace     string // the worker's stack trace, if it sent one
}

// Error names the interface and method, and gives the worker's error type and message.
// The trace is not included: it is in Trace.
func (e *RemoteError) Error() string {
	typ := ""
	if e.Type != "" {
		typ = e.Type + ": "
	}
	return fmt.Sprintf("client: %s raised %s%s (raised by the worker's code: a checkout it was made on stays usable)",
		callName(e.Interface, e.Method), typ, e.Message)
}

// callName names a call for error messages: "passwd.hash", or "passwd()" for a
// function-style call.
func callName(iface, method string) string {
	if method == "" {
		return iface + "()"
	}
	return iface + "." + method
}

// sentinelsFor maps a daemon error code to the sentinels the error matches, and a hint
// saying what to do next.
func sentinelsFor(code string) ([]error, string) {
	switch code {
	case wire.CodeUnknownInterface:
		return []error{ErrUnknownInterface}, "check Config.Interface against the daemon's config (taskctl status lists the interfaces)"
	case wire.CodeRemoved:
		return []error{ErrInterfaceRemoved}, "a reload removed it from the daemon's config: stop using it, or add it back to the config and reload taskd"
	case wire.CodeInvalidConfig:
		return []error{ErrInvalidConfig}, "fix the file taskd was started with and reload again; taskd runs on with the config it had"
	case wire.CodeOverloaded:
		return []error{ErrOverloaded}, "retry later, or raise the interface's max_queue or max_workers"
	case wire.CodeUnavailable:
		return []error{ErrUnavailable}, "fix the worker (its stderr is quoted above) or its command in the daemon's config; taskd keeps retrying"
	case wire.CodeShuttingDown:
		return []error{ErrShuttingDown}, "retry once taskd has restarted"
	case wire.CodeAborted:
		return []error{ErrAborted}, "an earlier call on this checkout raised, so this one was not run; the checkout is still usable"
	case wire.CodeWorkerLost:
		return []error{ErrWorkerLost}, "release this checkout and check out again"
	case wire.CodeCallTimeout:
		return []error{ErrCallTimeout}, "the call ran longer than the interface's call_timeout: make it faster or raise call_timeout; release this checkout and check out again"
	case wire.CodeProtocol:
		return []error{ErrProtocol, ErrWorkerLost}, "the worker broke the worker protocol (see docs/worker-protocol.md); release this checkout and check out again"
	case wire.CodeInvalidUTF8:
		return []error{ErrProtocol}, "JSON must be UTF-8: send binary data as base64 (encoding/json does that for a []byte); the call was not run, and the checkout is still usable"
	case wire.CodeForbidden:
		return []error{ErrForbidden}, "taskd's config (interfaces.NAME.allow) decides who may use an interface: run as an allowed user or group, or ask taskd's admin to allow this one"
	case wire.CodeUnknownCheckout:
		return []error{ErrWorkerLost}, "taskd no longer knows this checkout; release it and check out again"
	}
	if is, hint := steerSentinels(code); is != nil { // steer.go
		return is, hint
	}
	return []error{ErrProtocol}, "unexpected error code from taskd"
}

// daemonError builds the error for a refusal, failure or loss reported by taskd.
// what describes the operation, e.g. `checkout of "passwd"`.
func daemonError(what, code, msg string) error {
	is, hint := sentinelsFor(code)
	if code == wire.CodeInvalidConfig {
		// msg lists the problems one per line: quoted, they would make one long line.
		return &wrapped{text: fmt.Sprintf("%v:\n%s\n%s", is[0], indentLines(msg), hint), errs: is}
	}
	return &wrapped{text: fmt.Sprintf("%v: %s: taskd says %s (%s); %s", is[0], what, quoteMsg(msg), code, hint), errs: is}
}

// indentLines indents each line of msg by two spaces, for a list in an error's text.
func indentLines(msg string) string {
	msg = strings.TrimRight(msg, "\n")
	if msg == "" {
		return "  (taskd gave no details: see its log)"
	}
	return "  " + strings.ReplaceAll(msg, "\n", "\n  ")
}

func quoteMsg(msg string) string {
	if msg == "" {
		return "nothing more"
	}
	return fmt.Sprintf("%q", msg)
}

// unreachableError reports that taskd could not be reached. It matches ErrUnreachable, the
// last dial or connection error, and the context error that ended the wait (if any).
type unreachableError struct {
	addr    string
	last    error // last dial or connection error; may be nil if none happened yet
	ctxErr  error
	waiting string // what was waiting, e.g. `checkout of "passwd"`
}

func (e *unreachableError) Error() string {
	last := "no connection attempt finished yet"
	if e.last != nil {
		last = "last error: " + e.last.Error()
	}
	s := fmt.Sprintf("%v at %s", ErrUnreachable, e.addr)
	if e.waiting != "" {
		s += " (" + e.waiting + ")"
	}
	if e.ctxErr != nil {
		s += fmt.Sprintf(": %v while connecting", e.ctxErr)
	}
	return s + "; " + last + "; start taskd, or point Config.Addr / $TASKD_ADDR at the address it listens on"
}

func (e *unreachableError) Unwrap() []error {
	errs := []error{ErrUnreachable}
	if e.last != nil {
		errs = append(errs, e.last)
	}
	if e.ctxErr != nil {
		errs = append(errs, e.ctxErr)
	}
	return errs
}

// wrapped is an error with its own text that matches several errors.
type wrapped struct {
	text string
	errs []error
}

func (e *wrapped) Error() string   { return e.text }
func (e *wrapped) Unwrap() []error { return e.errs }

// abortError is the sticky error of a checkout aborted with Checkout.Abort. It matches
// ErrAborted and the cause given to Abort, if any.
type abortError struct {
	what  string // the checkout, as Checkout.describe gives it
	cause error  // may be nil
}

func (e *abortError) Error() string {
	cause := ""
	if e.cause != nil {
		cause = fmt.Sprintf(": %v", e.cause)
	}
	return fmt.Sprintf("%v: checkout of %s aborted by the application%s; its worker is retired (killed if a call does not stop within the interface's cancel_grace): release this checkout and check out again", ErrAborted, e.what, cause)
}

func (e *abortError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrAborted}
	}
	return []error{ErrAborted, e.cause}
}
