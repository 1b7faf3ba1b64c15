package config

import (
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

func TestScalar(t *testing.T) {
	intType, stringType := reflect.TypeFor[int](), reflect.TypeFor[string]()
	tests := []struct {
		name    string
		yaml    string
		to      reflect.Type
		want    any
		wantErr string
	}{
		{"size int", "100", byteSizeType, ByteSize(100), ""},
		{"size whole float", "1e6", byteSizeType, ByteSize(1000000), ""},
		{"size string", "16MiB", byteSizeType, 16 * MiB, ""},
		{"size digits string", `"4096"`, byteSizeType, 4 * KiB, ""},
		{"size negative", "-1", byteSizeType, nil, "must not be negative"},
		{"size fraction", "1.5", byteSizeType, nil, "want a whole number of bytes"},
		{"size bad unit", "16 megs", byteSizeType, nil, `unknown unit "megs"`},
		{"size bool", "true", byteSizeType, nil, `size "true": want a whole number of bytes`},
		{"size list", "[1]", byteSizeType, nil, `want a size such as "16MiB", got a list`},

		{"duration string", "1m30s", durationType, 90 * time.Second, ""},
		{"duration negative", "-1s", durationType, -time.Second, ""},
		{"duration zero number", "0", durationType, time.Duration(0), ""},
		{"duration bare number", "10", durationType, nil, `a bare number is ambiguous — add a unit, such as "10s"`},
		{"duration quoted number", `"10"`, durationType, nil, `duration "10": want a number with a unit`},
		{"duration mapping", "{a: 1}", durationType, nil, "got a mapping"},

		{"int", "4", intType, 4, ""},
		{"int quoted", `"4"`, intType, 4, ""},
		{"int word", "lots", intType, nil, `want a whole number, got "lots"`},
		{"int fraction", "1.5", intType, nil, `want a whole number, got "1.5"`},

		{"string as written", "0660", stringType, "0660", ""},
		{"string from a number", "14", stringType, "14", ""},
		{"string list", "[a]", stringType, nil, "want a string, got a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var doc yaml.Node
			require.NoError(t, yaml.Unmarshal([]byte(tt.yaml), &doc))
			got, err := scalar(doc.Content[0], tt.to)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got.Interface())
		})
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"abc", "", 3},
		{"max_wrokers", "max_workers", 1},
		{"listne", "listen", 1},
		{"kitten", "sitting", 3},
	}
	for _, tt := range tests {
		t.Run(tt.a+"/"+tt.b, func(t *testing.T) {
			assert.Equal(t, tt.want, editDistance(tt.a, tt.b))
			assert.Equal(t, tt.want, editDistance(tt.b, tt.a))
		})
	}
}

func TestSuggest(t *testing.T) {
	tests := []struct {
		key        string
		candidates []string
		want       string
	}{
		{"max_wrokers", []string{"min_idle", "max_workers", "max_queue"}, "max_workers"},
		{"frobnicate", []string{"min_idle", "max_workers", "max_queue"}, ""},
		{"abc", []string{"axx"}, "axx"},          // 2 edits: the most for a 3-letter key
		{"abc", []string{"xyz"}, ""},             // 3 edits: too far
		{"ab", []string{"ay", "ax", "zz"}, "ax"}, // a tie goes to the first in sorted order
		{"lsten", []string{"log", "listen", "lsn"}, "listen"},
		{"x", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			assert.Equal(t, tt.want, suggest(tt.key, tt.candidates))
		})
	}
}

func TestSplitList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"a", []string{"a"}},
		{"a,b", []string{"a", "b"}},
		{" a , b\tc\n", []string{"a", "b", "c"}},
		{",,a,,", []string{"a"}},
		{`["a b", "c"]`, []string{"a b", "c"}},
		{` []`, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := splitList(tt.in)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}
