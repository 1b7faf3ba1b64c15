package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"time"

	"github.com/taskd-dev/taskd/internal/fdio"
	"github.com/taskd-dev/taskd/internal/wire"
)

// LogLine is one stderr line of a worker, as taskd logged it: cut at the interface's
// stderr_line_max, and only if it was within stderr_rate (the lines over it are not
// kept). It is a plain value, owned by the caller.
type LogLine struct {
	Time      time.Time `json:"time"`      // when taskd read the line
	Interface string    `json:"interface"` // the worker's interface
	Worker    string    `json:"worker"`    // the worker's id, e.g. "passwd-3"
	PID       int       `json:"pid"`       // the worker's process id
	Line      string    `json:"line"`
	// Dropped, in FollowLogs only, counts the lines that taskd dropped just before this
	// one because they were not read fast enough.
	Dropped uint64 `json:"dropped,omitempty"`
}

// Logs returns the recent stderr lines of the workers of interface iface ("" for every
// interface), oldest first: taskd keeps the last 1000 lines or 256 KiB of each
// interface, whichever is less. Like Ping it fails at once if taskd cannot be dialled;
// an interface taskd does not know gives an error matching ErrUnknownInterface.
//
// Logs, like FollowLogs, uses a connection of its own, closed before it returns.
func (c *Client) Logs(ctx context.Context, iface string) ([]LogLine, error) {
	ctx, cancel := withTimeout(ctx, c.timeout)
	defer cancel()
	var out []LogLine
	err := c.logs(ctx, iface, false, func(l LogLine) { out = append(out, l) })
	return out, err
}

// FollowLogs calls fn with the recent stderr lines of the workers of interface iface (""
// for every interface), as Logs returns them, and then with each new line as taskd logs
// it, until ctx ends; it then returns ctx's error. It returns another error if taskd
// cannot be dialled, refuses the request, or the connection breaks. fn is called on
// FollowLogs' goroutine, one line at a time: a slow fn makes taskd drop lines (never
// hold up the workers), and the next line delivered says how many (LogLine.Dropped).
// Config.Timeout does not apply.
func (c *Client) FollowLogs(ctx context.Context, iface string, fn func(LogLine)) error {
	return c.logs(ctx, iface, true, fn)
}

// logs sends a logs request on a connection of its own and gives fn the lines of each
// answer: the one answer, or, with follow, every answer until ctx ends.
func (c *Client) logs(ctx context.Context, iface string, follow bool, fn func(LogLine)) error {
	what := "logs"
	if c.multi != nil {
		return c.multi.perDaemon(what)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return c.closedErr()
	}
	nc, err := c.dial()
	if err != nil {
		return &unreachableError{addr: c.cfg.Addr, last: err, waiting: what}
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() }) // unblocks the reader
	defer stop()

	const id = 1
	req, err := wire.AppendClientMsg(nil, &wire.ClientMsg{T: wire.TLogs, ID: id, Iface: iface, Follow: follow})
	if err != nil {
		return err
	}
	if _, err := nc.Write(req); err != nil {
		return c.logsErr(ctx, err)
	}
	lr := wire.NewLineReader(fdio.NewReader(nc), maxLine)
	for {
		line, err := lr.ReadLine()
		if err != nil {
			return c.logsErr(ctx, err)
		}
		m, err := wire.DecodeClientMsg(line)
		if err != nil {
			return fmt.Errorf("%w: logs: %v", ErrProtocol, err)
		}
		switch {
		case m.T == wire.TFatal:
			return fmt.Errorf("%w: logs: taskd closed the connection: %s", ErrProtocol, m.Msg)
		case m.ID != id:
			continue
		case m.T == wire.TRefused:
			return daemonError(what, m.Code, m.Msg)
		case m.T != wire.TLogs:
			continue
		}
		if m.Dropped > 0 && len(m.Lines) == 0 {
			fn(LogLine{Dropped: m.Dropped})
		}
		for i, l := range m.Lines {
			ll := logLineFromWire(l)
			if i == 0 {
				ll.Dropped = m.Dropped
			}
			fn(ll)
		}
		if !follow {
			return nil
		}
	}
}

// logsErr is the error of a logs connection that failed with err: ctx's error if ctx
// ended (which closed the connection).
func (c *Client) logsErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, net.ErrClosed) {
		return err
	}
	return &unreachableError{addr: c.cfg.Addr, last: fmt.Errorf("connection lost: %w", err), waiting: "logs"}
}

func logLineFromWire(l wire.LogLine) LogLine {
	sec, frac := math.Modf(l.TS)
	return LogLine{Time: time.Unix(int64(sec), int64(math.Round(frac*1e6))*1e3), Interface: l.Iface,
		Worker: l.Worker, PID: l.PID, Line: l.Line}
}
