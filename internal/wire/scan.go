package wire

import (
	"encoding/binary"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"unicode/utf8"
)

// This file is the fast path of both decoders: a JSON validator that also finds the
// top-level fields of an object, so that a message is checked once and its payloads are
// located — not decoded — and later relayed byte for byte. It accepts exactly what
// encoding/json's Valid accepts that is also valid UTF-8 (FuzzScanMatchesEncodingJSON
// checks that): encoding/json's Valid lets invalid UTF-8 through inside strings, which
// taskd must not relay, and the check costs the scan nothing on ASCII.

// maxDepth matches encoding/json's nesting limit.
const maxDepth = 10000

// field is one top-level member of an object: its key (still quoted and escaped) and its
// raw value.
type field struct {
	key, val []byte
}

// scanObject validates line as one JSON object (surrounding white space allowed) and
// appends its members to fields. ok is false if line is not exactly one valid JSON object.
func scanObject(line []byte, fields []field) ([]field, bool) {
	i := skipWS(line, 0)
	if i >= len(line) || line[i] != '{' {
		return fields, false
	}
	end, fields, ok := skipComposite(line, i, 1, fields, true)
	return fields, ok && skipWS(line, end) == len(line)
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue validates the value starting at b[i] and returns the index just past it.
func skipValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return i, false
		}
		end, _, ok := skipComposite(b, i, depth+1, nil, false)
		return end, ok
	case c == '-' || c >= '0' && c <= '9':
		return skipNumber(b, i)
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	}
	return i, false
}

func skipLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// skipComposite validates the object or array at b[i]. With collect set, an object's
// members are appended to members (scanObject uses this for the top level).
func skipComposite(b []byte, i, depth int, members []field, collect bool) (int, []field, bool) {
	isObj := b[i] == '{'
	closer := byte(']')
	if isObj {
		closer = '}'
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == closer {
		return i + 1, members, true
	}
	for {
		var ok bool
		ks, ke := i, i
		if isObj {
			if ke, ok = skipString(b, i); !ok {
				return ke, members, false
			}
			i = skipWS(b, ke)
			if i >= len(b) || b[i] != ':' {
				return i, members, false
			}
			i = skipWS(b, i+1)
		}
		vs := i
		if i, ok = skipValue(b, i, depth); !ok {
			return i, members, false
		}
		if collect {
			members = append(members, field{key: b[ks:ke], val: b[vs:i]})
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return i, members, false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case closer:
			return i + 1, members, true
		default:
			return i, members, false
		}
	}
}

// skipString validates the string starting at b[i] (a '"') and returns the index past
// its closing quote.
func skipString(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	i++
	for {
		for i+8 <= len(b) && plain8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8 // most bytes of long strings
		}
		for i < len(b) && plain[b[i]] {
			i++ // most bytes of most strings
		}
		if i >= len(b) {
			return i, false
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			if i+1 >= len(b) {
				return i, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return i, false
				}
				i += 6
			default:
				return i, false
			}
		case c < 0x20:
			return i, false
		default: // the first byte of a multi-byte sequence, or not valid UTF-8
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				return i, false
			}
			i += n
		}
	}
}

// Eight bytes at a time (SWAR): lo8 and hi8 repeat 0x01 and 0x80 in every byte.
const (
	lo8 = 0x0101010101010101
	hi8 = 0x8080808080808080
)

// plain8 reports whether all eight bytes of x (a little-endian load) are plain. A word
// with a byte ≥ 0x80 is not: the byte loop then checks its UTF-8.
func plain8(x uint64) bool { return x&hi8 == 0 && quiet8(x) }

// quiet8 reports whether no byte of x, taken as ASCII, is below 0x20, '"' or '\': bytes
// that a JSON string literal must escape. (Exact for bytes below 0x80: a borrow can only
// come from a byte that is itself flagged.)
func quiet8(x uint64) bool {
	ctl := (x - 0x20*lo8) &^ x // a byte < 0x20 sets its high bit
	quo := ((x ^ '"'*lo8) - lo8) &^ (x ^ '"'*lo8)
	bsl := ((x ^ '\\'*lo8) - lo8) &^ (x ^ '\\'*lo8)
	return (ctl|quo|bsl)&hi8&^x == 0
}

// plain marks the bytes that a string may hold as they are and that need no further
// check: printable ASCII but for '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func skipNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		s := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == s {
			return i, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		s := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == s {
			return i, false
		}
	}
	return i, true
}

// unquoteKey returns the unescaped key.
func unquoteKey(k []byte) string {
	if !hasEscape(k) {
		return string(k[1 : len(k)-1])
	}
	var s string
	_ = json.Unmarshal(k, &s) // validated already
	return s
}

func hasEscape(s []byte) bool {
	for _, c := range s {
		if c == '\\' {
			return true
		}
	}
	return false
}

// errNotString and friends describe a field of the wrong JSON type.
type typeError struct{ want string }

func (e typeError) Error() string { return "want " + e.want }

// decodeString decodes a JSON string value; null gives "" and present false.
func decodeString(v []byte) (s string, present bool, err error) {
	return decodeStringWith(v, internString)
}

// decodeName is decodeString for names that recur on every line of a connection (a
// method, an interface): they are interned in a small cache (see internName).
func decodeName(v []byte) (s string, present bool, err error) {
	return decodeStringWith(v, internName)
}

func decodeStringWith(v []byte, plain func([]byte) string) (s string, present bool, err error) {
	switch {
	case string(v) == "null":
		return "", false, nil
	case len(v) == 0 || v[0] != '"':
		return "", true, typeError{"a string"}
	case !hasEscape(v) && utf8.Valid(v):
		return plain(v[1 : len(v)-1]), true, nil
	}
	s, err = unmarshalString(v)
	return s, true, err
}

// unmarshalString decodes a string with escapes. It is a function of its own so that
// only this path pays for the variable that json.Unmarshal makes escape.
func unmarshalString(v []byte) (string, error) {
	var s string
	err := json.Unmarshal(v, &s)
	return s, err
}

// names is internName's cache: direct-mapped, so bounded whatever names arrive, and safe
// for concurrent use (each slot is replaced whole).
var names [512]atomic.Pointer[string]

// maxInterned bounds the names kept in the cache.
const maxInterned = 64

// internName returns string(b) without allocating when b is in the cache, which keeps
// the last name seen for each of its slots.
func internName(b []byte) string {
	if len(b) > maxInterned {
		return string(b)
	}
	h := uint32(2166136261) // FNV-1a
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	slot := &names[h%uint32(len(names))]
	if p := slot.Load(); p != nil && *p == string(b) {
		return *p
	}
	s := string(b)
	slot.Store(&s)
	return s
}

// internString avoids an allocation for the message types and codes that every line
// carries.
func internString(b []byte) string {
	switch string(b) {
	case TCall:
		return TCall
	case TOK:
		return TOK
	case TAborted:
		return TAborted
	case TErr:
		return TErr
	case TReady:
		return TReady
	case TDone:
		return TDone
	case TCancel:
		return TCancel
	case TFail:
		return TFail
	case TCheckout:
		return TCheckout
	case TGranted:
		return TGranted
	case TRelease:
		return TRelease
	}
	return string(b)
}

// decodeUint decodes a JSON number that must be a non-negative integer (as encoding/json
// does for a uint64 field); null gives present false.
func decodeUint(v []byte) (n uint64, present bool, err error) {
	if string(v) == "null" {
		return 0, false, nil
	}
	n, err = strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, true, typeError{"a non-negative integer"}
	}
	return n, true, nil
}

// decodeInt decodes a JSON integer into an int.
func decodeInt(v []byte) (n int, present bool, err error) {
	if string(v) == "null" {
		return 0, false, nil
	}
	i, err := strconv.ParseInt(string(v), 10, strconv.IntSize)
	if err != nil {
		return 0, true, typeError{"an integer"}
	}
	return int(i), true, nil
}

func decodeBool(v []byte) (b bool, err error) {
	switch string(v) {
	case "true":
		return true, nil
	case "false", "null":
		return false, nil
	}
	return false, typeError{"true or false"}
}

// AppendString appends s as a JSON string literal.
func AppendString(buf []byte, s string) []byte {
	if !utf8.ValidString(s) {
		b, _ := json.Marshal(s) // replaces invalid UTF-8 as encoding/json always does
		return append(buf, b...)
	}
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		for i+8 <= len(s) && quiet8(uint64(s[i])|uint64(s[i+1])<<8|uint64(s[i+2])<<16|uint64(s[i+3])<<24|
			uint64(s[i+4])<<32|uint64(s[i+5])<<40|uint64(s[i+6])<<48|uint64(s[i+7])<<56) {
			i += 8 // nothing to escape in these eight bytes (valid UTF-8: checked above)
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		buf = append(buf, s[start:i]...)
		switch c {
		case '"', '\\':
			buf = append(buf, '\\', c)
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\r':
			buf = append(buf, '\\', 'r')
		case '\t':
			buf = append(buf, '\\', 't')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hexDigit[c>>4], hexDigit[c&0xf])
		}
		start = i + 1
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

const hexDigit = "0123456789abcdef"
