package config

import (
	"fmt"
	"math"
	"reflect"
	"time"
)

var (
	byteSizeType = reflect.TypeFor[ByteSize]()
	durationType = reflect.TypeFor[time.Duration]()
	stringsType  = reflect.TypeFor[[]string]()
)

// DecodeHook converts the raw values a YAML or environment reader produces into Config's
// field types. It has the signature of mapstructure.DecodeHookFuncType, so a loader passes
// it to mapstructure (or viper.DecodeHook) as it is; this package does not import either.
//
//   - ByteSize from an integer (bytes) or a string such as "16MiB" (see ParseByteSize);
//   - time.Duration from a string such as "10s", "1m30s" or "-1s" (see time.ParseDuration);
//     a bare number other than 0 is refused, because "10" might mean seconds or nanoseconds;
//   - []string from a single string is refused: lists such as command are argv lists, never
//     a string for a shell to split.
//
// Every other value passes through unchanged.
func DecodeHook(from, to reflect.Type, data any) (any, error) {
	switch to {
	case byteSizeType:
		return decodeByteSize(data)
	case durationType:
		return decodeDuration(data)
	case stringsType:
		if s, ok := data.(string); ok {
			return nil, fmt.Errorf("got the string %q, want a list such as [\"python3\", \"worker.py\"]", s)
		}
	}
	return data, nil
}

func decodeByteSize(data any) (any, error) {
	switch v := data.(type) {
	case ByteSize:
		return v, nil
	case string:
		return ParseByteSize(v)
	case float32, float64:
		f := reflect.ValueOf(v).Float()
		if f < 0 || f != math.Trunc(f) || f >= math.MaxInt64 {
			return nil, fmt.Errorf("size %v: want a whole, non-negative number of bytes, or a string such as \"16MiB\"", v)
		}
		return ByteSize(f), nil
	}
	rv := reflect.ValueOf(data)
	switch {
	case rv.CanInt():
		if rv.Int() < 0 {
			return nil, fmt.Errorf("size %d: must not be negative", rv.Int())
		}
		return ByteSize(rv.Int()), nil
	case rv.CanUint():
		if rv.Uint() > math.MaxInt64 {
			return nil, fmt.Errorf("size %d: too large", rv.Uint())
		}
		return ByteSize(rv.Uint()), nil
	}
	return nil, fmt.Errorf("size: got %T, want a number of bytes or a string such as \"16MiB\"", data)
}

func decodeDuration(data any) (any, error) {
	switch v := data.(type) {
	case time.Duration:
		return v, nil
	case string:
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("duration %q: want a number with a unit, such as 500ms, 10s, 1m30s or 2h", v)
		}
		return d, nil
	}
	if rv := reflect.ValueOf(data); rv.CanInt() || rv.CanUint() || rv.CanFloat() {
		if !rv.IsZero() {
			return nil, fmt.Errorf("duration %v: a bare number is ambiguous — add a unit, such as \"%vs\" or \"%vms\"", data, data, data)
		}
		return time.Duration(0), nil
	}
	return nil, fmt.Errorf("duration: got %T, want a string such as \"10s\"", data)
}
