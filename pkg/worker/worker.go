package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/wire"
)

// Func handles one call. It gets a context that is cancelled when taskd cancels the call
// or closes the worker's stdin (already cancelled when it starts if taskd cancelled the
// call while it was queued), and the call's arguments and logger in c. Its result is
// encoded with encoding/json (a json.RawMessage is sent as is, after validation); a
// non-nil error is sent as an "err" reply instead (see Error), and so is a panic, with
// type "panic" and the goroutine's stack as trace.
//
// Calls run one at a time, so a Func need not be safe for concurrent use with itself or
// with other Funcs of the same Spec. A call queued behind an error of its checkout (the
// protocol's "ep" rule) is answered "aborted" and never reaches a Func. A Func that ignores ctx keeps running after taskd has
// closed stdin; Run then returns without waiting for it (after a short grace period).
type Func func(ctx context.Context, c *Call) (any, error)

// Spec describes a worker. Only Methods or Default is required; the zero value of every
// other field means "none". Run reads the Spec once: do not modify it, or the Methods map,
// while Run is running.
type Spec struct {
	// Methods handles method-style calls ({"m":"name"}), by method name.
	Methods map[string]Func

	// Default handles function-style calls (no "m", or "m":""). If nil, such calls get
	// an "err" reply of type "UnknownMethod".
	Default Func

	// Setup runs once, before the worker tells taskd it is ready. If it returns an error,
	// Run returns that error without serving any call; print it to stderr and exit
	// non-zero (log.Fatal does both), and taskd reports it as the interface being
	// unavailable. Setup runs after the protocol has moved off stdout.
	Setup func(ctx context.Context) error

	// CheckoutDone runs each time taskd releases a checkout of this worker and keeps the
	// worker (protocol "done"), after all calls of that checkout: roll back a transaction,
	// drop per-checkout state. It runs between calls, never during one. If it fails
	// (returns an error or panics), the worker's state is suspect: Run returns the error,
	// so that the process exits and serves no further checkout.
	CheckoutDone func(ctx context.Context) error

	// Logger, if set, is where the worker's log records go (besides the replies). By
	// default records of level info and above are written to stderr with zap's console
	// encoder, without timestamps (taskd adds its own). Records of the levels this
	// logger enables also travel back to the caller with each reply.
	Logger *zap.Logger
}

func (s *Spec) validate() error {
	if len(s.Methods) == 0 && s.Default == nil {
		return errors.New("worker: Spec has neither Methods nor Default: give it something to call")
	}
	for name, f := range s.Methods {
		if name == "" {
			return errors.New(`worker: Spec.Methods has a method named "": use Spec.Default for function-style calls`)
		}
		if f == nil {
			return fmt.Errorf("worker: Spec.Methods[%q] is nil", name)
		}
	}
	return nil
}

// Run serves worker protocol v1 on stdin and stdout until stdin reaches EOF, then returns
// nil. It first moves the protocol to private descriptors, points descriptor 1 at stderr
// and descriptor 0 at /dev/null (so os.Stdout writes to stderr and os.Stdin reads nothing
// from then on), runs s.Setup, and announces that the worker is ready.
//
// At EOF on stdin Run cancels the running call's context, answers the messages it had
// already read (their contexts cancelled too) and returns, within about a second even if a
// Func ignores its context. Piping a few lines into a worker is thus a quick test.
//
// Run returns an error if s is invalid, if Setup or CheckoutDone fails, if taskd sends a
// line longer than the maximum message size (TASKD_MAX_MESSAGE_BYTES, by default 16 MiB),
// or if reading stdin or writing the protocol fails. Call Run once per process, from
// main, and exit non-zero with its error on stderr (log.Fatal does both).
func Run(s Spec) error {
	if err := s.validate(); err != nil {
		return err
	}
	if v := os.Getenv("TASKD_PROTOCOL"); v != "" && v != strconv.Itoa(wire.ProtocolVersion) {
		return fmt.Errorf("worker: taskd asks for worker protocol %q but this SDK speaks %d: upgrade github.com/taskd-dev/taskd/pkg/worker", v, wire.ProtocolVersion)
	}
	limit, err := maxMessageBytes()
	if err != nil {
		return err
	}
	in, out, err := takeStdio()
	if err != nil {
		return err
	}
	defer in.Close()
	defer out.Close()
	e := endpoints{in: in, out: out, stderr: os.Stderr, maxLine: limit}
	e.control, e.stats, e.leaseErr = leaseEndpoints()
	return serveOn(context.Background(), s, e)
}

// maxMessageBytes reads the line length limit from TASKD_MAX_MESSAGE_BYTES: a number of
// bytes (what taskd sets), or one with a KiB, MiB or GiB suffix (for a person running the
// worker by hand).
func maxMessageBytes() (int, error) {
	v := os.Getenv("TASKD_MAX_MESSAGE_BYTES")
	if v == "" {
		return wire.DefaultMaxMessageBytes, nil
	}
	num, unit := strings.TrimSpace(v), 1
	for suffix, size := range map[string]int{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if rest, ok := strings.CutSuffix(num, suffix); ok {
			num, unit = strings.TrimSpace(rest), size
		}
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 || n > math.MaxInt32/unit {
		return 0, fmt.Errorf("worker: TASKD_MAX_MESSAGE_BYTES=%q: want a positive size such as 16777216 or 16MiB", v)
	}
	return n * unit, nil
}

// Interface returns the name of the taskd interface this worker serves
// (TASKD_INTERFACE), or "" when the process was not started by taskd.
// It is safe for concurrent use.
func Interface() string { return os.Getenv("TASKD_INTERFACE") }

// ID returns the id taskd gave this worker process (TASKD_WORKER_ID), as shown by
// "taskctl status", or "" when the process was not started by taskd.
// It is safe for concurrent use.
func ID() string { return os.Getenv("TASKD_WORKER_ID") }
