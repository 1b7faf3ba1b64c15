package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDocsExamplesLoad keeps docs/config.md honest: every YAML example in it is a valid
// config.
func TestDocsExamplesLoad(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	require.NoError(t, err)
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1)
	require.NotEmpty(t, blocks)
	for i, b := range blocks {
		t.Run(string(rune('a'+i)), func(t *testing.T) {
			_, err := parse(b[1], nil)
			require.NoError(t, err, "example:\n%s", b[1])
		})
	}
}

// TestDocsNameEveryKey keeps docs/config.md complete: it names every key and its variable.
func TestDocsNameEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	require.NoError(t, err)
	var walk func(typ reflect.Type, key, env string)
	walk = func(typ reflect.Type, key, env string) {
		for i := range typ.NumField() {
			tag := tagName(typ.Field(i))
			k, e := join(key, tag), env+"_"+envWord(tag)
			switch f := typ.Field(i).Type; {
			case f.Kind() == reflect.Struct:
				walk(f, k, e)
			case f.Kind() == reflect.Pointer && f.Elem().Kind() == reflect.Struct: // allow, admin
				walk(f.Elem(), k, e)
			case f.Kind() == reflect.Map && f.Elem().Kind() == reflect.Struct:
				walk(f.Elem(), "", e+"_PASSWD")
			default:
				if f.Kind() == reflect.Map {
					e += "_<VAR>"
				}
				assert.Contains(t, string(doc), "`"+k+"`")
				assert.Contains(t, string(doc), "`"+e+"`")
			}
		}
	}
	walk(reflect.TypeFor[Config](), "", "TASKD")
}

// docEntry is what docs/config.md says of a key: its default and what a reload does.
type docEntry struct{ def, reload string }

// documentedKeys reads the key tables of docs/config.md: each "### `key`" section under
// "## Daemon keys" (its table's default and reload rows, one column per key when a key
// row lists several) and the table under "## Interface keys" (one row per key).
func documentedKeys(t *testing.T, doc string) (daemon, iface map[string]docEntry) {
	t.Helper()
	daemon, iface = map[string]docEntry{}, map[string]docEntry{}
	cells := func(line string) []string {
		parts := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		return parts
	}
	ticked := regexp.MustCompile("`([a-z_.]+)`")
	daemonPart, ifacePart, ok := strings.Cut(doc, "\n## Interface keys\n")
	require.True(t, ok, "docs/config.md has a section \"## Interface keys\"")
	_, daemonPart, ok = strings.Cut(daemonPart, "\n## Daemon keys\n")
	require.True(t, ok, "docs/config.md has a section \"## Daemon keys\"")
	for _, sec := range strings.Split(daemonPart, "\n### ")[1:] {
		heading, body, _ := strings.Cut(sec, "\n")
		var keys []string
		rows := map[string][]string{}
		for _, line := range strings.Split(body, "\n") {
			if !strings.HasPrefix(line, "|") {
				continue
			}
			c := cells(line)
			if _, seen := rows[c[0]]; !seen {
				rows[c[0]] = c[1:]
			}
			if c[0] == "key" && strings.Contains(line, "`") && keys == nil {
				for _, k := range c[1:] {
					keys = append(keys, strings.Trim(k, "`"))
				}
			}
		}
		if keys == nil {
			for _, m := range ticked.FindAllStringSubmatch(heading, -1) {
				keys = append(keys, m[1])
			}
			require.Len(t, keys, 1, "section %q names several keys: give its table a key row", heading)
		}
		for i, k := range keys {
			e := docEntry{}
			if i < len(rows["default"]) {
				e.def = rows["default"][i]
			}
			if i < len(rows["reload"]) {
				e.reload = rows["reload"][i]
			}
			daemon[k] = e
		}
	}
	ifaceTable, _, _ := strings.Cut(ifacePart, "\n### ")
	for _, line := range strings.Split(ifaceTable, "\n") {
		if c := cells(line); strings.HasPrefix(line, "| `") && len(c) == 5 {
			iface[strings.Trim(c[0], "`")] = docEntry{def: c[2], reload: c[4]}
		}
	}
	return daemon, iface
}

// TestDocsMarkEveryKeyReload keeps docs/config.md true to the code: every key (or the
// mapping it belongs to, as rlimits for rlimits.nofile) has a default and the reload mark
// that DaemonKeyReload or InterfaceKeyReload gives it.
func TestDocsMarkEveryKeyReload(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	require.NoError(t, err)
	daemon, iface := documentedKeys(t, string(doc))
	checked := map[string]bool{}
	check := func(docs map[string]docEntry, key string, want Reload) {
		t.Helper()
		k := key
		e, ok := docs[k]
		for !ok && strings.Contains(k, ".") {
			k = k[:strings.LastIndex(k, ".")]
			e, ok = docs[k]
		}
		if !assert.True(t, ok, "docs/config.md has no default and reload mark for %s (nor for a mapping it is in)", key) {
			return
		}
		assert.NotEmpty(t, e.def, "the default of %s (documented as %s)", key, k)
		assert.True(t, strings.HasPrefix(e.reload, want.String()), "%s: documented as %q, but a reload does %q", key, e.reload, want)
		checked[key] = true
	}
	// reported is the key a reload reports for a change below it: a pointer to a
	// mapping (allow, admin) changes as a whole.
	var walk func(typ reflect.Type, key, reported string, inIface bool)
	walk = func(typ reflect.Type, key, reported string, inIface bool) {
		for i := range typ.NumField() {
			tag := tagName(typ.Field(i))
			k := join(key, tag)
			r := join(reported, tag)
			if reported != key {
				r = reported
			}
			switch f := typ.Field(i).Type; {
			case f.Kind() == reflect.Struct:
				walk(f, k, r, inIface)
			case f.Kind() == reflect.Pointer && f.Elem().Kind() == reflect.Struct:
				walk(f.Elem(), k, k+"\x00", inIface) // reported as k, below
			case f.Kind() == reflect.Map && f.Elem().Kind() == reflect.Struct:
				walk(f.Elem(), "", "", true)
			case inIface:
				check(iface, k, InterfaceKeyReload(strings.TrimSuffix(r, "\x00")))
			default:
				check(daemon, k, DaemonKeyReload(strings.TrimSuffix(r, "\x00")))
			}
		}
	}
	walk(reflect.TypeFor[Config](), "", "", false)
	for _, k := range []string{"admin.users", "admin.tls_names", "hide_forbidden", "max_clients", "hello_timeout",
		"tls.cert_file", "tls.key_file", "tls.client_ca_file", "tls.min_version",
		"allow.users", "allow.groups", "allow.uids", "allow.gids", "allow.tls_names", "user", "group", "umask",
		"rlimits.nofile", "rlimits.nproc", "rlimits.as", "rlimits.cpu", "rlimits.core", "rlimits.fsize",
		"cgroup.memory_max", "cgroup.pids_max", "cgroup.cpu_weight"} {
		assert.True(t, checked[k], "%s was checked", k)
	}
}
