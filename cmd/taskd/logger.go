package main

import (
	"fmt"
	"io"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/taskd-dev/taskd/internal/config"
)

// newLogger builds the daemon's one logger from log.level and log.format, writing to w
// (stderr, which systemd sends to the journal). Its level can be changed while it runs
// (a reload of log.level) through the level returned with it.
func newLogger(c config.Log, w io.Writer) (*zap.Logger, zap.AtomicLevel, error) {
	level := zap.NewAtomicLevel()
	l, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, level, fmt.Errorf("log.level: %w", err)
	}
	level.SetLevel(l)

	var enc zapcore.Encoder
	switch c.Format {
	case "json":
		ec := zap.NewProductionEncoderConfig()
		ec.TimeKey = "ts"
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		ec.EncodeDuration = zapcore.StringDurationEncoder // "10s", as in the config
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("2006-01-02T15:04:05.000Z07:00")
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, level, fmt.Errorf("log.format: %q is not one of json, console", c.Format)
	}

	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level)
	return zap.New(core, zap.AddCaller(), zap.AddStacktrace(zapcore.DPanicLevel), zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), level, nil
}
