package config

import (
	"math"
	"strings"
	"testing"

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
