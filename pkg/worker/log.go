package worker

import (
	"bytes"
	"io"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/taskd-dev/taskd/internal/wire"
)

// newLoggers returns the SDK's own stderr logger and the logger handed to calls: the same
// output, teed into rec while a call runs. Records reach rec at the levels the stderr
// output enables.
func newLoggers(base *zap.Logger, stderr io.Writer, rec *recorder) (sdk, calls *zap.Logger) {
	if base == nil {
		cfg := zapcore.EncoderConfig{
			MessageKey:     "msg",
			LevelKey:       "level",
			NameKey:        "logger",
			EncodeLevel:    zapcore.LowercaseLevelEncoder,
			EncodeName:     zapcore.FullNameEncoder,
			EncodeDuration: zapcore.StringDurationEncoder,
			EncodeTime:     zapcore.RFC3339NanoTimeEncoder,
		}
		core := zapcore.NewCore(zapcore.NewConsoleEncoder(cfg), zapcore.Lock(zapcore.AddSync(stderr)), zapcore.InfoLevel)
		base = zap.New(core)
	}
	calls = base.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(c, newRecordCore(zapcore.LevelOf(c), rec))
	}))
	return base, calls
}

// recorder collects the log records of the running call. It is safe for concurrent use.
type recorder struct {
	mu   sync.Mutex
	on   bool
	recs []wire.LogRecord
}

// start begins collecting for a new call.
func (r *recorder) start() {
	r.mu.Lock()
	r.on, r.recs = true, nil
	r.mu.Unlock()
}

// stop ends collecting and returns the records made since start, in order.
func (r *recorder) stop() []wire.LogRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	recs := r.recs
	r.on, r.recs = false, nil
	return recs
}

func (r *recorder) active() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.on
}

func (r *recorder) add(rec wire.LogRecord) {
	r.mu.Lock()
	if r.on {
		r.recs = append(r.recs, rec)
	}
	r.mu.Unlock()
}

// recordCore is a zapcore.Core that turns entries into wire.LogRecords. Its encoder writes
// only the fields (and the logger name, if any) as one JSON object: the record's "f".
type recordCore struct {
	zapcore.LevelEnabler
	enc zapcore.Encoder
	rec *recorder
}

func newRecordCore(level zapcore.LevelEnabler, rec *recorder) *recordCore {
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{
		NameKey:        "logger",
		EncodeName:     zapcore.FullNameEncoder,
		EncodeDuration: zapcore.StringDurationEncoder,
		EncodeTime:     zapcore.RFC3339NanoTimeEncoder,
	})
	return &recordCore{LevelEnabler: level, enc: enc, rec: rec}
}

func (c *recordCore) With(fields []zapcore.Field) zapcore.Core {
	enc := c.enc.Clone()
	for _, f := range fields {
		f.AddTo(enc)
	}
	return &recordCore{LevelEnabler: c.LevelEnabler, enc: enc, rec: c.rec}
}

func (c *recordCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) && c.rec.active() {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *recordCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	buf, err := c.enc.EncodeEntry(e, fields)
	if err != nil {
		return err
	}
	f := bytes.Clone(bytes.TrimSpace(buf.Bytes()))
	buf.Free()
	c.rec.add(wire.LogRecord{
		TS:  float64(e.Time.UnixNano()) / 1e9,
		Lvl: e.Level.String(),
		Msg: e.Message,
		F:   f,
	})
	return nil
}

func (c *recordCore) Sync() error { return nil }
