package client

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/taskd-dev/taskd/internal/wire"
)

// emitLogs writes the log records a worker sent with a reply to Config.Logger, in order.
// A record that cannot be decoded is logged as such rather than dropped.
func (c *Client) emitLogs(w WorkerInfo, method string, raw json.RawMessage) {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return
	}
	var recs []wire.LogRecord
	if err := json.Unmarshal(raw, &recs); err != nil {
		if ce := c.log.Check(zapcore.WarnLevel, "undecodable worker logs"); ce != nil {
			ce.Write(c.logFields(w, method, zap.String("logs", wire.Snippet(raw)), zap.Error(err))...)
		}
		return
	}
	for _, rec := range recs {
		ce := c.log.Check(logLevel(rec.Lvl), rec.Msg)
		if ce == nil {
			continue
		}
		fields := c.logFields(w, method, zap.Time("worker_ts", tsTime(rec.TS)))
		ce.Write(append(fields, recordFields(rec.F)...)...)
	}
}

func (c *Client) logFields(w WorkerInfo, method string, more ...zap.Field) []zap.Field {
	return append([]zap.Field{
		zap.String("interface", c.cfg.Interface),
		zap.String("worker", w.ID),
		zap.Int("pid", w.PID),
		zap.String("method", method),
	}, more...)
}

// logLevel maps a worker's level name to a zap level. Levels that would make zap panic or
// exit (fatal, panic) are logged as errors: a worker must not stop the application.
func logLevel(lvl string) zapcore.Level {
	switch strings.ToLower(lvl) {
	case "debug", "trace":
		return zapcore.DebugLevel
	case "warn", "warning":
		return zapcore.WarnLevel
	case "error", "err", "fatal", "panic", "dpanic", "critical", "crit":
		return zapcore.ErrorLevel
	}
	return zapcore.InfoLevel
}

func tsTime(ts float64) time.Time {
	sec, frac := math.Modf(ts)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// recordFields turns a record's "f" object into zap fields, sorted by key. Numbers stay
// exact: integers become Int64 fields, others Float64 (or strings if they overflow).
func recordFields(raw json.RawMessage) []zap.Field {
	if len(raw) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var f map[string]any
	if err := dec.Decode(&f); err != nil {
		return []zap.Field{zap.String("f", wire.Snippet(raw))}
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fields := make([]zap.Field, 0, len(keys))
	for _, k := range keys {
		switch v := f[k].(type) {
		case json.Number:
			if i, err := v.Int64(); err == nil {
				fields = append(fields, zap.Int64(k, i))
			} else if x, err := v.Float64(); err == nil {
				fields = append(fields, zap.Float64(k, x))
			} else {
				fields = append(fields, zap.String(k, v.String()))
			}
		default:
			fields = append(fields, zap.Any(k, v))
		}
	}
	return fields
}
