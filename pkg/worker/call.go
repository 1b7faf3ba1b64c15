package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/wire"
)

// Call is one call from taskd, handed to a Func. It is valid until the Func returns;
// its methods are safe for concurrent use by goroutines the Func starts.
type Call struct {
	// Method is the method name, or "" for a function-style call.
	Method string

	// Log writes to the worker's stderr and records what it writes, so that the records
	// made while the call runs (also from goroutines it started) travel back to the
	// caller with the reply, in order. It is shared by all calls: keep using it after
	// the call returns and the records only go to stderr (or to whichever call is
	// running then).
	Log *zap.Logger

	args json.RawMessage

	once  sync.Once
	elems []json.RawMessage
	err   error

	mu     sync.Mutex
	bye    bool
	byeMsg string
}

// RawArgs returns the arguments exactly as received: a JSON array (never nil). The caller
// must not modify it.
func (c *Call) RawArgs() json.RawMessage { return c.args }

// NumArgs returns the number of arguments.
func (c *Call) NumArgs() int {
	elems, _ := c.split()
	return len(elems)
}

// Args decodes the arguments into ptrs, one pointer per argument in order, with
// encoding/json rules; a nil pointer skips its argument. Numbers decoded into an
// interface (any) become json.Number, so integers beyond 2^53 survive exactly. It fails
// with an *Error of type "ArgumentError" unless there are exactly len(ptrs) arguments,
// each decodable into its pointer; return that error as is to tell the caller.
func (c *Call) Args(ptrs ...any) error {
	elems, err := c.split()
	if err != nil {
		return err
	}
	if len(elems) != len(ptrs) {
		return &Error{Type: "ArgumentError", Msg: fmt.Sprintf("%s takes %d argument%s, got %d", c.what(), len(ptrs), plural(len(ptrs)), len(elems))}
	}
	for i, p := range ptrs {
		if err := c.decode(elems, i, p); err != nil {
			return err
		}
	}
	return nil
}

// Arg decodes argument i (from 0) into ptr like Args; use it for optional arguments,
// after checking NumArgs.
func (c *Call) Arg(i int, ptr any) error {
	elems, err := c.split()
	if err != nil {
		return err
	}
	if i < 0 || i >= len(elems) {
		return &Error{Type: "ArgumentError", Msg: fmt.Sprintf("%s got %d argument%s, has no argument %d", c.what(), len(elems), plural(len(elems)), i+1)}
	}
	return c.decode(elems, i, ptr)
}

func (c *Call) decode(elems []json.RawMessage, i int, ptr any) error {
	if ptr == nil {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(elems[i]))
	d.UseNumber()
	if err := d.Decode(ptr); err != nil {
		return &Error{Type: "ArgumentError", Msg: fmt.Sprintf("%s: argument %d: %v", c.what(), i+1, err)}
	}
	return nil
}

func (c *Call) split() ([]json.RawMessage, error) {
	c.once.Do(func() {
		if err := json.Unmarshal(c.args, &c.elems); err != nil {
			c.err = &Error{Type: "ArgumentError", Msg: fmt.Sprintf("%s: arguments are not a JSON array: %v", c.what(), err)}
		}
	})
	return c.elems, c.err
}

func (c *Call) what() string {
	if c.Method == "" {
		return "function-style call"
	}
	return fmt.Sprintf("method %q", c.Method)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// Bye asks taskd to retire this worker when the current checkout ends (protocol "bye"),
// for example because it holds too much memory or a connection went bad. The message
// is sent just before this call's reply; reason (may be empty) shows up in taskd's log.
// Calling Bye again replaces the reason; calling it after the Func returned does nothing.
func (c *Call) Bye(reason string) {
	c.mu.Lock()
	c.bye, c.byeMsg = true, reason
	c.mu.Unlock()
}

func (c *Call) byeRequest() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bye, c.byeMsg
}

// Timer starts a timer and returns the function that stops it. Stopping it logs one info
// record on c.Log whose message is name and whose fields are fields plus "timer" (name)
// and "ms" (the elapsed time in milliseconds, a float with microsecond resolution): the
// timer record format every taskd SDK uses. The record is made when the timer stops, so
// it follows the records logged while the timer ran. Stopping it again does nothing; a
// timer never stopped records nothing. Typical use:
//
//	defer c.Timer("query", zap.String("table", "users"))()
func (c *Call) Timer(name string, fields ...zap.Field) func() {
	start := time.Now()
	var once sync.Once
	return func() {
		once.Do(func() {
			ms := float64(time.Since(start).Microseconds()) / 1000
			c.Log.Info(name, append(fields[:len(fields):len(fields)], zap.String("timer", name), zap.Float64("ms", ms))...)
		})
	}
}

// Error is an error with a type name of your choosing, for the "type" field of an "err"
// reply (the caller sees it as client.RemoteError's Type). Return it from a Func, or wrap
// it with fmt.Errorf's %w: the reply's message is then the whole wrapped message, and its
// type and trace come from the Error.
//
// For other errors the reply's type is, in order: the result of an ErrorType() string
// method of an error in the chain; "context.Canceled" or "context.DeadlineExceeded"; or
// the Go type name without "*" ("errors.errorString", "fs.PathError"), looking through
// fmt.Errorf's single-%w wrapper. The trace is fmt's %+v of the error when that says more
// than its message (as errors that carry a stack do).
//
// An Error is a plain value: safe for concurrent use once built.
type Error struct {
	Type  string // e.g. "ValueError"; "" means the Go type name, "worker.Error"
	Msg   string
	Trace string // optional: a stack or other detail; panics fill it with the stack
}

// Errorf returns an *Error of the given type with a formatted message.
func Errorf(typ, format string, args ...any) error {
	return &Error{Type: typ, Msg: fmt.Sprintf(format, args...)}
}

// Error returns e.Msg.
func (e *Error) Error() string { return e.Msg }

// ErrorType returns e.Type.
func (e *Error) ErrorType() string { return e.Type }

// errorPayload turns an error a Func returned into the "e" object of an "err" reply,
// following the rules in Error's documentation.
func errorPayload(err error) wire.ErrorPayload {
	p := wire.ErrorPayload{Msg: err.Error()}
	var we *Error
	var typed interface{ ErrorType() string }
	switch {
	case errors.As(err, &we):
		p.Type, p.Trace = we.Type, we.Trace
	case errors.As(err, &typed):
		p.Type = typed.ErrorType()
	case errors.Is(err, context.Canceled):
		p.Type = "context.Canceled"
	case errors.Is(err, context.DeadlineExceeded):
		p.Type = "context.DeadlineExceeded"
	}
	if p.Type == "" {
		p.Type = typeName(err)
	}
	if p.Trace == "" {
		if v := fmt.Sprintf("%+v", err); v != p.Msg {
			p.Trace = v
		}
	}
	return p
}

func typeName(err error) string {
	for {
		name := strings.TrimPrefix(reflect.TypeOf(err).String(), "*")
		if name == "fmt.wrapError" {
			if inner := errors.Unwrap(err); inner != nil {
				err = inner
				continue
			}
		}
		return name
	}
}
