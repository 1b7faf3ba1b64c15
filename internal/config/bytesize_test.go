package config

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    ByteSize
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "100", want: 100},
		{in: "100B", want: 100},
		{in: "512KiB", want: 512 << 10},
		{in: "16MiB", want: 16 << 20},
		{in: "16mib", want: 16 << 20},
		{in: "16 MiB", want: 16 << 20},
		{in: " 2GiB ", want: 2 << 30},
		{in: "1TiB", want: 1 << 40},
		{in: "1KB", want: 1000},
		{in: "1MB", want: 1000 * 1000},
		{in: "3GB", want: 3e9},
		{in: "1TB", want: 1e12},
		{in: "4k", want: 4096},
		{in: "4M", want: 4 << 20},
		{in: "8388607TiB", want: 8388607 << 40},

		{in: "", wantErr: "want a whole number"},
		{in: "MiB", wantErr: "want a whole number"},
		{in: "-1", wantErr: "want a whole number"},
		{in: "1.5MiB", wantErr: `unknown unit ".5MiB"`},
		{in: "16 MiBs", wantErr: `unknown unit "MiBs"`},
		{in: "16Mb/s", wantErr: "unknown unit"},
		{in: "8388608TiB", wantErr: "too large"},
		{in: "99999999999999999999", wantErr: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseByteSize(tt.in)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestByteSizeString(t *testing.T) {
	tests := []struct {
		in   ByteSize
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{1000, "1000B"},
		{1024, "1KiB"},
		{1536, "1536B"},
		{16 * MiB, "16MiB"},
		{3 * GiB, "3GiB"},
		{1 * TiB, "1TiB"},
		{1025 * GiB, "1025GiB"},
		{math.MaxInt64, "9223372036854775807B"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.in.String())
			back, err := ParseByteSize(tt.in.String())
			require.NoError(t, err)
			assert.Equal(t, tt.in, back)
		})
	}
}

// FuzzParseByteSize checks that the parser never panics, never returns a negative size, and
// that every size it accepts survives String and back.
func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{
		"0", "100", "16MiB", "512KiB", "1MB", "1 GiB", "4k", "8388607TiB", "8388608TiB",
		"", " ", "-1", "1.5MiB", "0x10", "16MiB\x00", "１MiB", strings.Repeat("9", 40),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseByteSize(s)
		if err != nil {
			if b != 0 {
				t.Fatalf("ParseByteSize(%q) = %d with error %v", s, b, err)
			}
			return
		}
		if b < 0 {
			t.Fatalf("ParseByteSize(%q) = %d, negative", s, b)
		}
		back, err := ParseByteSize(b.String())
		if err != nil || back != b {
			t.Fatalf("ParseByteSize(%q) = %d; its String %q parses to %d, %v", s, b, b.String(), back, err)
		}
	})
}

// decode runs DecodeHook the way the loader does: through mapstructure, weakly typed.
func decode(t *testing.T, raw map[string]any) (Config, error) {
	t.Helper()
	var c Config
	d, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook:       DecodeHook,
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		Result:           &c,
	})
	require.NoError(t, err)
	return c, d.Decode(raw)
}

func TestDecodeHook(t *testing.T) {
	tests := []struct {
		name    string
		raw     map[string]any
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{"byte size int", map[string]any{"max_message_bytes": 100}, func(t *testing.T, c Config) {
			assert.Equal(t, ByteSize(100), c.MaxMessageBytes)
		}, ""},
		{"byte size uint64", map[string]any{"max_message_bytes": uint64(2048)}, func(t *testing.T, c Config) {
			assert.Equal(t, 2*KiB, c.MaxMessageBytes)
		}, ""},
		{"byte size whole float", map[string]any{"max_message_bytes": 1e6}, func(t *testing.T, c Config) {
			assert.Equal(t, ByteSize(1000000), c.MaxMessageBytes)
		}, ""},
		{"byte size string", map[string]any{"max_message_bytes": "16MiB"}, func(t *testing.T, c Config) {
			assert.Equal(t, 16*MiB, c.MaxMessageBytes)
		}, ""},
		{"byte size digits string (env)", map[string]any{"max_message_bytes": "4096"}, func(t *testing.T, c Config) {
			assert.Equal(t, 4*KiB, c.MaxMessageBytes)
		}, ""},
		{"byte size negative", map[string]any{"max_message_bytes": -1}, nil, "must not be negative"},
		{"byte size fraction", map[string]any{"max_message_bytes": 1.5}, nil, "want a whole, non-negative number"},
		{"byte size bad unit", map[string]any{"max_message_bytes": "16 megs"}, nil, `unknown unit "megs"`},
		{"byte size bool", map[string]any{"max_message_bytes": true}, nil, "got bool"},

		{"duration string", map[string]any{"shutdown_grace": "1m30s"}, func(t *testing.T, c Config) {
			assert.Equal(t, 90*time.Second, c.ShutdownGrace)
		}, ""},
		{"negative duration", map[string]any{"interfaces": map[string]any{"x": map[string]any{"call_timeout": "-1s"}}},
			func(t *testing.T, c Config) { assert.Equal(t, -time.Second, c.Interfaces["x"].CallTimeout) }, ""},
		{"duration zero number", map[string]any{"shutdown_grace": 0}, func(t *testing.T, c Config) {
			assert.Zero(t, c.ShutdownGrace)
		}, ""},
		{"duration bare number", map[string]any{"shutdown_grace": 10}, nil, `a bare number is ambiguous — add a unit, such as "10s"`},
		{"duration no unit string", map[string]any{"shutdown_grace": "10"}, nil, `duration "10": want a number with a unit`},

		{"command list", map[string]any{"interfaces": map[string]any{"x": map[string]any{"command": []any{"python3", "w.py"}}}},
			func(t *testing.T, c Config) { assert.Equal(t, []string{"python3", "w.py"}, c.Interfaces["x"].Command) }, ""},
		{"command string", map[string]any{"interfaces": map[string]any{"x": map[string]any{"command": "python3 w.py"}}},
			nil, `got the string "python3 w.py", want a list`},

		{"weak typing from env strings", map[string]any{"interfaces": map[string]any{"x": map[string]any{
			"min_idle": "0", "max_workers": "4", "env": map[string]any{"COST": 10},
		}}}, func(t *testing.T, c Config) {
			x := c.Interfaces["x"]
			require.NotNil(t, x.MinIdle)
			assert.Equal(t, 0, *x.MinIdle)
			assert.Equal(t, 4, x.MaxWorkers)
			assert.Equal(t, map[string]string{"COST": "10"}, x.Env)
		}, ""},
		{"metrics_listen empty is off", map[string]any{"metrics_listen": ""}, func(t *testing.T, c Config) {
			assert.Empty(t, c.MetricsListen)
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := decode(t, tt.raw)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}
