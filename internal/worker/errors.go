package worker

import (
	"errors"
	"fmt"
	"strings"
)

// Reasons taskd kills or stops a worker. They are the Cause of an *ExitError and can be
// matched with errors.Is.
var (
	ErrCallTimeout  = errors.New("call_timeout exceeded")
	ErrSetupTimeout = errors.New("setup_timeout exceeded")
	ErrStopped      = errors.New("stopped by taskd")
	ErrExited       = errors.New("worker exited") // matched by every *ExitError
)

// ExitError describes how a worker process ended. Every call that was outstanding when
// the worker ended fails with it.
type ExitError struct {
	Interface string
	ID        string
	PID       int
	// Reason says how it ended: "exited with status 3", "killed by signal SIGSEGV",
	// "killed by signal SIGKILL from outside taskd", "was killed by taskd: ...".
	Reason string
	// Cause is why taskd killed or stopped it; nil if the worker ended on its own (a
	// crash, an exit, a signal that taskd did not send), even if taskd was about to kill
	// it then.
	Cause      error
	StderrTail []string
}

func (e *ExitError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "worker %s (pid %d) %s", e.ID, e.PID, e.Reason)
	if len(e.StderrTail) > 0 {
		fmt.Fprintf(&b, "; last stderr: %s", strings.Join(e.StderrTail, " | "))
	}
	return b.String()
}

// Unwrap returns the cause (so errors.Is(err, ErrCallTimeout) works) and ErrExited.
func (e *ExitError) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Cause, ErrExited}
	}
	return []error{ErrExited}
}

// StartError reports a worker that did not become ready.
type StartError struct {
	Interface  string
	ID         string
	Reason     string // what went wrong, including how the process ended
	StderrTail []string
	Err        error
}

func (e *StartError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "worker %s of interface %q did not start: %s", e.ID, e.Interface, e.Reason)
	if len(e.StderrTail) > 0 {
		fmt.Fprintf(&b, "; last stderr: %s", strings.Join(e.StderrTail, " | "))
	}
	return b.String()
}

func (e *StartError) Unwrap() error { return e.Err }
