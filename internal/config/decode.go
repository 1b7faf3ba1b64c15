package config

import (
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder turns a YAML document and environment variables into a Config. The document is
// walked as yaml.Nodes, not decoded into maps, so that interface and variable names keep
// their case and every problem can name its line.
type decoder struct {
	problems []error           // unknown keys and wrong types: reported first, alone
	zeros    []error           // 0 where the default was meant: reported with Validate's
	src      map[string]source // where each key path's value came from, for Validate's problems
}

func (d *decoder) bad(at source, key, format string, args ...any) {
	d.problems = append(d.problems, &problem{key: key, msg: fmt.Sprintf(format, args...), source: at})
}

// where says where the value at key came from: the key itself, or else its nearest
// ancestor, such as the interface that lacks a command.
func (d *decoder) where(key string) source {
	for {
		if s, ok := d.src[key]; ok {
			return s
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			return source{}
		}
		key = key[:i]
	}
}

// value decodes n into v, which is settable and has the Go type of the value at key; env
// names the variable that n was made from, if it was.
func (d *decoder) value(n *yaml.Node, v reflect.Value, key, env string) {
	n = deref(n)
	at := source{line: n.Line, env: env}
	if n.ShortTag() == "!!null" {
		return // as if left out
	}
	switch v.Kind() {
	case reflect.Struct:
		d.fields(n, v, key)
	case reflect.Map:
		d.entries(n, v, key)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.value(n, p.Elem(), key, env)
		v.Set(p)
	case reflect.Slice:
		d.list(n, v, key, env)
	default:
		x, err := scalar(n, v.Type())
		if err != nil {
			d.bad(at, key, "%v", err)
			return
		}
		v.Set(x)
	}
}

// field decodes the value of one struct field and notes a 0 given for a number or duration
// that Normalize would replace with its default: someone who writes max_workers: 0 means
// something other than 8. max_checkouts, max_age and max_rss (0 = never), and
// checkout_warn_after and slow_call (0 = off), are the keys
// where 0 has a meaning of its own; min_idle and recycle_jitter are pointers for the same
// reason.
func (d *decoder) field(n *yaml.Node, v reflect.Value, key, env string) {
	n = deref(n)
	d.value(n, v, key, env)
	if n.ShortTag() == "!!null" || !v.CanInt() || !v.IsZero() || zeroMeansNever(key) {
		return
	}
	msg := "0 is not allowed: leave the key out to get the default (docs/config.md)"
	if strings.HasSuffix(key, "_timeout") && !strings.HasSuffix(key, ".setup_timeout") {
		msg += ", or give a negative value such as -1s for no timeout"
	}
	d.zeros = append(d.zeros, &problem{key: key, msg: msg, source: source{line: n.Line, env: env}})
}

// zeroMeansNever reports whether key is one where 0 means "never" rather than "default".
func zeroMeansNever(key string) bool {
	for _, k := range []string{".max_checkouts", ".max_age", ".max_rss", ".checkout_warn_after", ".slow_call",
		".cgroup.memory_max", ".cgroup.pids_max", ".cgroup.cpu_weight"} {
		if strings.HasSuffix(key, k) {
			return true
		}
	}
	return false
}

// tagsOf returns the keys of the struct type t, in its order.
func tagsOf(t reflect.Type) []string {
	var tags []string
	for i := range t.NumField() {
		if tag := tagName(t.Field(i)); tag != "" {
			tags = append(tags, tag)
		}
	}
	return tags
}

// fields decodes a mapping into the struct v. Keys match the fields' yaml tags without
// regard to case.
func (d *decoder) fields(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.MappingNode {
		d.bad(source{line: n.Line}, key, "want a mapping (key: value lines), got %s", describe(n))
		return
	}
	index := map[string]int{}
	for i := range v.NumField() {
		if tag := tagName(v.Type().Field(i)); tag != "" {
			index[tag] = i
		}
	}
	seen := map[string]int{}
	for _, kv := range pairs(n) {
		k, val := kv[0], kv[1]
		tag := strings.ToLower(k.Value)
		i, ok := index[tag]
		if !ok {
			msg := "unknown key " + join(key, k.Value)
			switch s := suggest(tag, slices.Collect(maps.Keys(index))); {
			case s != "":
				msg += " (did you mean " + s + "?)"
			case key != "" && len(index) <= 8: // a small mapping such as cgroup: say what it takes
				last := key[strings.LastIndex(key, ".")+1:]
				msg += " (" + last + " takes " + strings.Join(tagsOf(v.Type()), ", ") + ")"
			default:
				msg += " (docs/config.md lists every key)"
			}
			d.bad(source{line: k.Line}, "", "%s", msg)
			continue
		}
		path := join(key, tag)
		if line, dup := seen[tag]; dup {
			d.bad(source{line: k.Line}, path, "given twice (also on line %d): keep one", line)
			continue
		}
		seen[tag] = k.Line
		d.src[path] = source{line: k.Line}
		d.field(val, v.Field(i), path, "")
	}
}

// entries decodes a mapping into the map v (interfaces, or an interface's env). Names keep
// their case; two names that would have the same TASKD_ variable are refused.
func (d *decoder) entries(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.MappingNode {
		d.bad(source{line: n.Line}, key, "want a mapping (name: value lines), got %s", describe(n))
		return
	}
	m := reflect.MakeMap(v.Type())
	byVar := map[string]string{}
	for _, kv := range pairs(n) {
		name, at := kv[0].Value, source{line: kv[0].Line}
		prev, dup := byVar[envWord(name)]
		switch {
		case dup && prev == name:
			d.bad(at, key, "%q is given twice: keep one", name)
		case dup:
			why := "would share their TASKD_ variables"
			if strings.EqualFold(prev, name) {
				why = "differ only in case"
			}
			d.bad(at, key, "%q and %q %s (TASKD_%s_%s...), so an override could not tell them apart: rename one",
				prev, name, why, envWord(key), envWord(name))
		default:
			byVar[envWord(name)] = name
		}
		path := key + "." + name
		elem := reflect.New(v.Type().Elem()).Elem()
		d.value(kv[1], elem, path, "") // for its problems, even if name is refused
		if !dup {
			d.src[path] = at
			m.SetMapIndex(reflect.ValueOf(name), elem)
		}
	}
	v.Set(m)
}

// list decodes a sequence of scalars into the []string (or []int) v. A single string is refused:
// lists such as command are argv lists, never a string for a shell to split.
func (d *decoder) list(n *yaml.Node, v reflect.Value, key, env string) {
	at := source{line: n.Line, env: env}
	switch n.Kind {
	case yaml.SequenceNode:
	case yaml.ScalarNode:
		d.bad(at, key, "got the string %q, want a list such as [\"python3\", \"worker.py\"]", n.Value)
		return
	default:
		d.bad(at, key, "want a list, got %s", describe(n))
		return
	}
	list := reflect.MakeSlice(v.Type(), 0, len(n.Content))
	for i, item := range n.Content {
		item = deref(item)
		path := fmt.Sprintf("%s[%d]", key, i)
		if env == "" {
			d.src[path] = source{line: item.Line}
		}
		x, err := scalar(item, v.Type().Elem()) // a string, or a whole number (uids, gids)
		if err != nil {
			d.bad(source{line: item.Line, env: env}, path, "%v", err)
			continue
		}
		list = reflect.Append(list, x)
	}
	v.Set(list)
}

// pairs returns the key and value nodes of a mapping in order, then those that its YAML
// merge keys (<<: *defaults) bring in; a key given in the mapping itself wins over a merged
// one, and an earlier merge over a later one. Each mapping is merged once at most, so that
// a mapping that merges itself, or one merged many times over, costs no more than its size.
func pairs(n *yaml.Node) [][2]*yaml.Node {
	var out [][2]*yaml.Node
	has := map[string]bool{}
	done := map[*yaml.Node]bool{}
	var expand func(m *yaml.Node, own bool)
	expand = func(m *yaml.Node, own bool) {
		done[m] = true
		var merges []*yaml.Node
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], deref(m.Content[i+1])
			switch {
			case k.ShortTag() == "!!merge" && v.Kind == yaml.SequenceNode:
				merges = append(merges, v.Content...)
			case k.ShortTag() == "!!merge":
				merges = append(merges, v)
			case own || !has[k.Value]: // the mapping's own duplicates are kept, for fields to report
				has[k.Value] = true
				out = append(out, [2]*yaml.Node{k, v})
			}
		}
		for _, src := range merges {
			if src = deref(src); src.Kind == yaml.MappingNode && !done[src] {
				expand(src, false)
			}
		}
	}
	expand(n, true)
	return out
}

// deref returns the node that an alias (*name) stands for, and any other node as it is.
func deref(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode {
		return n.Alias
	}
	return n
}

var (
	byteSizeType = reflect.TypeFor[ByteSize]()
	durationType = reflect.TypeFor[time.Duration]()
	percentType  = reflect.TypeFor[Percent]()
)

// scalar converts the scalar node n to t, which is a string, an int, a time.Duration or a
// ByteSize:
//
//   - a string is the text as written, so that socket_mode: 0660 stays "0660";
//   - an int is a whole number in decimal;
//   - a time.Duration is a string such as "10s", "1m30s" or "-1s" (see time.ParseDuration);
//     a bare number other than 0 is refused, because 10 might mean seconds or nanoseconds;
//   - a ByteSize is a whole number of bytes or a string such as "16MiB" (see ParseByteSize);
//   - a Percent is a string such as "10%" or "2.5%", or 0.
func scalar(n *yaml.Node, t reflect.Type) (reflect.Value, error) {
	if n.Kind != yaml.ScalarNode {
		return reflect.Value{}, fmt.Errorf("want %s, got %s", kindName(t), describe(n))
	}
	var x any
	var err error
	switch {
	case t == durationType:
		x, err = parseDuration(n)
	case t == byteSizeType:
		x, err = parseSize(n)
	case t == percentType:
		x, err = parsePercent(n)
	case t.Kind() == reflect.String:
		x = n.Value
	case t.Kind() == reflect.Bool:
		x, err = strconv.ParseBool(n.Value)
		if err != nil {
			err = fmt.Errorf("want true or false, got %q", n.Value)
		}
	case t.Kind() == reflect.Int:
		x, err = strconv.Atoi(n.Value)
		if err != nil {
			err = fmt.Errorf("want a whole number, got %q", n.Value)
		}
	default:
		err = fmt.Errorf("config: no decoding for %s", t) // a field type this file does not know
	}
	if err != nil {
		return reflect.Value{}, err
	}
	return reflect.ValueOf(x).Convert(t), nil
}

func parseDuration(n *yaml.Node) (time.Duration, error) {
	if tag := n.ShortTag(); tag == "!!int" || tag == "!!float" {
		if f, err := strconv.ParseFloat(n.Value, 64); err == nil && f == 0 {
			return 0, nil
		}
		return 0, fmt.Errorf("duration %s: a bare number is ambiguous — add a unit, such as \"%ss\" or \"%sms\"", n.Value, n.Value, n.Value)
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want a number with a unit, such as 500ms, 10s, 1m30s or 2h", n.Value)
	}
	return d, nil
}

func parseSize(n *yaml.Node) (ByteSize, error) {
	if strings.HasPrefix(strings.TrimSpace(n.Value), "-") {
		return 0, fmt.Errorf("size %s: must not be negative", n.Value)
	}
	if n.ShortTag() == "!!float" { // 1e6
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil || f != math.Trunc(f) || f >= math.MaxInt64 {
			return 0, fmt.Errorf("size %s: want a whole number of bytes, or a string such as \"16MiB\"", n.Value)
		}
		return ByteSize(f), nil
	}
	return ParseByteSize(n.Value)
}

func kindName(t reflect.Type) string {
	switch {
	case t == durationType:
		return `a duration such as "10s"`
	case t == byteSizeType:
		return `a size such as "16MiB"`
	case t == percentType:
		return `a percentage such as "10%"`
	case t.Kind() == reflect.Int:
		return "a whole number"
	case t.Kind() == reflect.Bool:
		return "true or false"
	}
	return "a string"
}

// describe names what a node holds, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	return strconv.Quote(n.Value)
}

func join(key, name string) string {
	if key == "" {
		return name
	}
	return key + "." + name
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if !f.IsExported() || name == "-" {
		return ""
	}
	return name
}
