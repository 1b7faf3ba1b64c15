package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestChangedKeys(t *testing.T) {
	a, err := parse([]byte(`
listen: ["unix:/tmp/a.sock"]
log: {level: info}
interfaces:
  x: {command: [w], env: {A: "1"}, max_workers: 2}
`), nil)
	require.NoError(t, err)
	b := *a
	b.Log.Level = "debug"
	b.Listen = []string{"unix:/tmp/b.sock"}
	b.ShutdownGrace = time.Minute
	assert.Equal(t, []string{"listen", "shutdown_grace", "log.level"}, ChangedDaemonKeys(*a, b))
	assert.Empty(t, ChangedDaemonKeys(*a, *a))

	x := a.Interfaces["x"]
	y := x
	y.Env = map[string]string{"A": "2"}
	y.MaxWorkers = 3
	n := 0
	y.MinIdle = &n
	assert.Equal(t, []string{"env", "min_idle", "max_workers"}, ChangedInterfaceKeys(x, y))
	assert.Empty(t, ChangedInterfaceKeys(x, x))
	e1, e2 := x, x
	e1.Env, e2.Env = nil, map[string]string{}
	assert.Empty(t, ChangedInterfaceKeys(e1, e2), "no env and env: {} are the same")

	assert.Equal(t, ReloadNewGeneration, InterfaceKeyReload("env"))
	assert.Equal(t, ReloadLive, InterfaceKeyReload("max_workers"))
	assert.Equal(t, ReloadRestart, DaemonKeyReload("listen"))
	assert.Equal(t, ReloadLive, DaemonKeyReload("log.level"))
	assert.Equal(t, ReloadRestart, DaemonKeyReload("log.format"))
}

// TestDocsMarkEveryKeyReload keeps docs/config.md's reload marks true: each daemon key's
// section has a "reload" row, and each interface key's row a reload column, with the mark
// that Reload.String gives.
func TestDocsMarkEveryKeyReload(t *testing.T) {
	raw, err := os.ReadFile("../../docs/config.md")
	require.NoError(t, err)
	doc := string(raw)
	sections := regexp.MustCompile("(?m)^### ").Split(doc, -1)
	section := func(key string) string {
		for _, s := range sections {
			if head, _, _ := strings.Cut(s, "\n"); strings.Contains(head, "`"+key+"`") {
				return s
			}
		}
		return ""
	}
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		keys := []string{tagName(f)}
		if f.Type.Kind() == reflect.Struct {
			keys = nil
			for j := range f.Type.NumField() {
				keys = append(keys, join(tagName(f), tagName(f.Type.Field(j))))
			}
		}
		for _, k := range keys {
			s := section(k)
			require.NotEmpty(t, s, "docs/config.md has no section for %s", k)
			row := regexp.MustCompile(`(?m)^\| reload \|.*$`).FindString(s)
			assert.Contains(t, row, DaemonKeyReload(k).String(), "the reload row of %s", k)
		}
	}
	it := reflect.TypeFor[Interface]()
	for i := range it.NumField() {
		k := tagName(it.Field(i))
		row := regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(k) + "` \\|.*$").FindString(doc)
		require.NotEmpty(t, row, "docs/config.md has no row for interface key %s", k)
		cells := strings.Split(strings.Trim(row, "| "), "|")
		assert.Equal(t, InterfaceKeyReload(k).String(), strings.TrimSpace(cells[len(cells)-1]), "the reload column of %s", k)
	}
}
