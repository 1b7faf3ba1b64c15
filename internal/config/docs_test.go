package config

import (
	"os"
	"reflect"
	"regexp"
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
