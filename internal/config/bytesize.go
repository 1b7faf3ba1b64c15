package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ByteSize is a size in bytes; in YAML it may be a number or a string such as "16MiB".
type ByteSize int64

// Units of ByteSize. The binary units (KiB, MiB, ...) are powers of 1024, the decimal ones
// (KB, MB, ...) powers of 1000.
const (
	B   ByteSize = 1
	KiB          = 1024 * B
	MiB          = 1024 * KiB
	GiB          = 1024 * MiB
	TiB          = 1024 * GiB
	KB           = 1000 * B
	MB           = 1000 * KB
	GB           = 1000 * MB
	TB           = 1000 * GB
)

// byteUnits is every suffix ParseByteSize accepts, matched without regard to case.
var byteUnits = map[string]ByteSize{
	"": B, "b": B,
	"k": KiB, "kib": KiB, "kb": KB,
	"m": MiB, "mib": MiB, "mb": MB,
	"g": GiB, "gib": GiB, "gb": GB,
	"t": TiB, "tib": TiB, "tb": TB,
}

// ParseByteSize parses a whole number of bytes with an optional unit: "100", "100B",
// "512KiB", "16MiB", "1GiB" (powers of 1024), "1KB", "1MB", "1GB" (powers of 1000).
// Units are case-insensitive, a space may separate number and unit, and a bare K, M, G or T
// means KiB, MiB, GiB or TiB. Fractions and negative sizes are errors.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q: want a whole number of bytes with an optional unit, such as 100, 512KiB or 16MiB", s)
	}
	unit, ok := byteUnits[strings.ToLower(strings.TrimSpace(t[i:]))]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q; use B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000)", s, strings.TrimSpace(t[i:]))
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/int64(unit) {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return ByteSize(n) * unit, nil
}

// String formats b in the largest binary unit that represents it exactly, such as "16MiB"
// or "1000B", so that ParseByteSize(b.String()) == b for every b ≥ 0.
func (b ByteSize) String() string {
	if b == 0 {
		return "0B"
	}
	for _, u := range []struct {
		size ByteSize
		name string
	}{{TiB, "TiB"}, {GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"}} {
		if b%u.size == 0 {
			return strconv.FormatInt(int64(b/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// UnmarshalText parses text with ParseByteSize.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalText formats b with String.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }
