package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/config"
)

func TestNewLogger(t *testing.T) {
	t.Run("json at info drops debug", func(t *testing.T) {
		var buf bytes.Buffer
		log, _, err := newLogger(config.Log{Level: "info", Format: "json"}, &buf)
		require.NoError(t, err)
		log.Debug("hidden")
		log.Info("shown", zap.String("interface", "passwd"))
		var rec map[string]any
		require.NoError(t, json.Unmarshal(buf.Bytes(), &rec), buf.String())
		assert.Equal(t, "shown", rec["msg"])
		assert.Equal(t, "info", rec["level"])
		assert.Equal(t, "passwd", rec["interface"])
		assert.Contains(t, rec, "ts")
		assert.Contains(t, rec, "caller")
	})
	t.Run("console at debug", func(t *testing.T) {
		var buf bytes.Buffer
		log, _, err := newLogger(config.Log{Level: "debug", Format: "console"}, &buf)
		require.NoError(t, err)
		log.Debug("visible", zap.Int("n", 1))
		assert.Contains(t, buf.String(), "DEBUG")
		assert.Contains(t, buf.String(), "visible")
		assert.Contains(t, buf.String(), `{"n": 1}`)
	})
	t.Run("bad level", func(t *testing.T) {
		_, _, err := newLogger(config.Log{Level: "loud", Format: "json"}, &bytes.Buffer{})
		require.ErrorContains(t, err, "log.level")
	})
	t.Run("bad format", func(t *testing.T) {
		_, _, err := newLogger(config.Log{Level: "info", Format: "xml"}, &bytes.Buffer{})
		require.ErrorContains(t, err, `log.format: "xml"`)
	})
}
