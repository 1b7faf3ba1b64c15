package main

import (
	"os"
	"regexp"
	"testing"

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
			_, err := loadConfig(writeConfig(t, string(b[1])))
			require.NoError(t, err, "example:\n%s", b[1])
		})
	}
}
