package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "taskd.yaml")
	require.NoError(t, os.WriteFile(path, []byte(yaml), 0o600))
	return path
}

func TestCheckConfigCommand(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantOut string
		wantErr string
	}{
		{"valid", []string{"--check-config", "-c", "GOOD"}, "config OK: 2 interfaces\n", ""},
		{"long flag", []string{"--check-config", "--config", "GOOD"}, "config OK: 2 interfaces\n", ""},
		{"invalid", []string{"--check-config", "-c", "BAD"}, "", "interfaces.passwd.max_workers: must be ≥ 1 (got -1)"},
		{"no file", []string{"--check-config"}, "", "no config file: run taskd -c FILE"},
		{"version", []string{"--version"}, "taskd version dev\n", ""},
		{"stray argument", []string{"-c", "x.yaml", "extra"}, "", "unknown command"},
	}
	bad := writeConfig(t, "interfaces: {passwd: {command: [w], max_workers: -1, min_idle: 0}}")
	good := writeConfig(t, "interfaces: {a: {command: [w]}, b: {command: [w]}}")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			cmd := newCommand(&out, nil)
			for i, a := range tt.args {
				switch a {
				case "BAD":
					tt.args[i] = bad
				case "GOOD":
					tt.args[i] = good
				}
			}
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantOut, out.String())
		})
	}
}

// TestShippedConfigIsValid keeps configs/taskd.yaml (what make run uses) valid.
func TestShippedConfigIsValid(t *testing.T) {
	var out bytes.Buffer
	cmd := newCommand(&out, nil)
	cmd.SetArgs([]string{"--check-config", "-c", "../../configs/taskd.yaml"})
	require.NoError(t, cmd.Execute())
	assert.Regexp(t, `^config OK: \d+ interfaces\n$`, out.String())
}
