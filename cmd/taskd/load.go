package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"unicode"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/taskd-dev/taskd/internal/config"
)

// Config loading: YAML through viper, TASKD_* environment overrides, strict decoding into
// config.Config, then Normalize and Validate. Nothing here needs the daemon.

const (
	envPrefix = "TASKD"
	// keyDelim separates viper key paths. It is not "." because interface names may
	// contain dots ("mail.send"), and viper would take those for nesting.
	keyDelim = "::"
)

// envKeyReplacer turns a viper key path into the tail of its environment variable name:
// interfaces::mail.send::max_workers → INTERFACES_MAIL_SEND_MAX_WORKERS (after upper-casing).
var envKeyReplacer = strings.NewReplacer(keyDelim, "_", ".", "_", "-", "_")

// envName is the environment variable that overrides the config key path.
func envName(path string) string {
	return envPrefix + "_" + strings.ToUpper(envKeyReplacer.Replace(path))
}

// loadConfig reads the YAML file at path, applies TASKD_* overrides from the process
// environment, and returns the normalized, validated configuration. The error lists every
// problem found, one per line, each naming its key (see config.Config.Validate).
func loadConfig(path string) (config.Config, error) {
	cfg, zeros, err := readConfig(path)
	if err != nil {
		return config.Config{}, err
	}
	cfg.Normalize()
	if err := errors.Join(errors.Join(zeros...), cfg.Validate()); err != nil {
		return config.Config{}, err
	}
	return cfg, nil
}

// readConfig is loadConfig without Normalize and Validate. Besides the decoded Config it
// returns the keys explicitly set to a 0 that Normalize would replace with a default, as
// errors to report along with Validate's.
func readConfig(path string) (config.Config, []error, error) {
	yamlDec, err := viper.NewCodecRegistry().Decoder("yaml")
	if err != nil {
		return config.Config{}, nil, err
	}
	// viper lower-cases every key it reads. Interface names and env variable names are
	// case-sensitive, so keep a copy of the file as written to restore them from.
	capture := &rawCapture{yaml: yamlDec}
	v := viper.NewWithOptions(
		viper.KeyDelimiter(keyDelim),
		viper.EnvKeyReplacer(envKeyReplacer),
		viper.WithDecoderRegistry(capture),
	)
	v.SetConfigFile(path)
	v.SetConfigType("yaml")
	if err := v.ReadInConfig(); err != nil {
		return config.Config{}, nil, fmt.Errorf("read config: %w", err)
	}
	names, err := originalNames(capture.raw)
	if err != nil {
		return config.Config{}, nil, err
	}

	// viper applies AutomaticEnv only to keys it already knows, so bind every key of the
	// Config type explicitly: then TASKD_LISTEN or TASKD_LOG_LEVEL work even when the file
	// does not mention the key. Interfaces can be tuned from the environment but not
	// created there: only interfaces named in the file get their keys bound.
	v.SetEnvPrefix(envPrefix)
	v.AutomaticEnv()
	keys := configKeys(reflect.TypeFor[config.Config](), "", slices.Collect(maps.Keys(names.ifaces)))
	var errs []error
	for _, k := range keys {
		if err := v.BindEnv(k.path); err != nil {
			return config.Config{}, nil, err
		}
		if !k.list {
			continue
		}
		// A list from the environment: a JSON array, or words split at commas and spaces.
		if s := os.Getenv(envName(k.path)); s != "" {
			list, err := splitList(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s (from %s): %w", displayPath(k.path, names), envName(k.path), err))
				continue
			}
			v.Set(k.path, list)
		}
	}
	if len(errs) > 0 {
		return config.Config{}, nil, errors.Join(errs...)
	}

	// Unknown keys and values of the wrong type are reported together; Validate's checks
	// come after, on a Config that decoded cleanly.
	errs = unknownKeys(v.AllSettings(), reflect.TypeFor[config.Config](), "", names)
	var cfg config.Config
	if err := v.UnmarshalExact(&cfg, viper.DecodeHook(config.DecodeHook)); err != nil {
		errs = append(errs, decodeErrors(err, names)...)
	}
	if len(errs) > 0 {
		return config.Config{}, nil, errors.Join(errs...)
	}
	zeros := explicitZeros(v, keys, cfg, names)
	names.restore(&cfg)
	return cfg, zeros, nil
}

// explicitZeros reports numbers and durations set to 0 in the file or the environment.
// In a Config, 0 means "the default", so Normalize would quietly turn max_workers: 0 into
// 8; someone who writes 0 means something else, so say so instead. max_checkouts (0 =
// never) and min_idle (0 = none) are the keys where 0 has a meaning of its own.
func explicitZeros(v *viper.Viper, keys []configKey, cfg config.Config, n names) []error {
	var errs []error
	for _, k := range keys {
		if !v.IsSet(k.path) || strings.HasSuffix(k.path, keyDelim+"max_checkouts") {
			continue
		}
		f := fieldByPath(reflect.ValueOf(cfg), strings.Split(k.path, keyDelim))
		if !f.IsValid() || !f.CanInt() || !f.IsZero() {
			continue
		}
		msg := "0 is not allowed: leave the key out to get the default (docs/config.md)"
		if strings.HasSuffix(k.path, "_timeout") && !strings.HasSuffix(k.path, "setup_timeout") {
			msg += ", or give a negative value such as -1s for no timeout"
		}
		errs = append(errs, fmt.Errorf("%s: %s", displayPath(k.path, n), msg))
	}
	return errs
}

// fieldByPath finds the value at a key path in a Config (keys as in mapstructure tags,
// interface names lower-cased), or the zero Value.
func fieldByPath(v reflect.Value, path []string) reflect.Value {
	for _, key := range path {
		switch v.Kind() {
		case reflect.Map:
			v = v.MapIndex(reflect.ValueOf(key))
		case reflect.Struct:
			var next reflect.Value
			for _, f := range reflect.VisibleFields(v.Type()) {
				if tagName(f) == key {
					next = v.FieldByIndex(f.Index)
				}
			}
			v = next
		default:
			return reflect.Value{}
		}
		if !v.IsValid() {
			return v
		}
	}
	return v
}

// rawCapture is a viper decoder registry with one decoder, for YAML, that also keeps what
// it decoded before viper lower-cases the keys.
type rawCapture struct {
	yaml viper.Decoder
	raw  map[string]any
}

func (c *rawCapture) Decoder(format string) (viper.Decoder, error) {
	if format != "yaml" {
		return nil, fmt.Errorf("config format %q not supported: taskd reads YAML", format)
	}
	return c, nil
}

func (c *rawCapture) Decode(b []byte, v map[string]any) error {
	if err := c.yaml.Decode(b, v); err != nil {
		return err
	}
	c.raw = make(map[string]any)
	return c.yaml.Decode(b, c.raw)
}

// names maps lower-cased interface names, and per interface lower-cased env variable
// names, to their spelling in the file.
type names struct {
	ifaces map[string]string
	env    map[string]map[string]string
}

func originalNames(raw map[string]any) (names, error) {
	n := names{ifaces: map[string]string{}, env: map[string]map[string]string{}}
	var errs []error
	ifaces, _ := lookupFold(raw, "interfaces").(map[string]any)
	for _, name := range slices.Sorted(maps.Keys(ifaces)) {
		lower := strings.ToLower(name)
		if prev, dup := n.ifaces[lower]; dup {
			errs = append(errs, fmt.Errorf("interfaces: %q and %q differ only in case; give them names that differ otherwise", prev, name))
			continue
		}
		n.ifaces[lower] = name
		env, _ := lookupFold(ifaces[name], "env").(map[string]any)
		n.env[lower] = map[string]string{}
		for _, k := range slices.Sorted(maps.Keys(env)) {
			kl := strings.ToLower(k)
			if prev, dup := n.env[lower][kl]; dup {
				errs = append(errs, fmt.Errorf("interfaces.%s.env: %q and %q differ only in case; taskd cannot tell them apart", name, prev, k))
				continue
			}
			n.env[lower][kl] = k
		}
	}
	return n, errors.Join(errs...)
}

func lookupFold(m any, key string) any {
	mm, _ := m.(map[string]any)
	for k, v := range mm {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return nil
}

// restore puts back the spelling of interface and env names, and adds interfaces that the
// file names with no settings at all (viper drops empty maps) so that Validate reports them.
func (n names) restore(cfg *config.Config) {
	ifaces := make(map[string]config.Interface, len(n.ifaces))
	for lower, in := range cfg.Interfaces {
		name, ok := n.ifaces[lower]
		if !ok {
			name = lower
		}
		if len(in.Env) > 0 {
			env := make(map[string]string, len(in.Env))
			for k, val := range in.Env {
				if orig, ok := n.env[lower][k]; ok {
					k = orig
				}
				env[k] = val
			}
			in.Env = env
		}
		ifaces[name] = in
	}
	for _, name := range n.ifaces {
		if _, ok := ifaces[name]; !ok {
			ifaces[name] = config.Interface{}
		}
	}
	if len(ifaces) > 0 || cfg.Interfaces != nil {
		cfg.Interfaces = ifaces
	}
}

// displayPath turns a viper key path into the dotted path used in messages, with the
// interface name spelled as in the file.
func displayPath(path string, n names) string {
	parts := strings.Split(path, keyDelim)
	if len(parts) > 1 && parts[0] == "interfaces" {
		if orig, ok := n.ifaces[parts[1]]; ok {
			parts[1] = orig
		}
	}
	return strings.Join(parts, ".")
}

type configKey struct {
	path string // viper key path, joined with keyDelim
	list bool   // a []string
}

// configKeys lists every leaf key of the struct type t, for the given interface names.
func configKeys(t reflect.Type, prefix string, ifaceNames []string) []configKey {
	var keys []configKey
	for _, f := range reflect.VisibleFields(t) {
		tag := tagName(f)
		if tag == "" {
			continue
		}
		path := prefix + tag
		ft := f.Type
		switch {
		case ft.Kind() == reflect.Struct && ft.PkgPath() != "time":
			keys = append(keys, configKeys(ft, path+keyDelim, ifaceNames)...)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
			for _, name := range ifaceNames {
				keys = append(keys, configKeys(ft.Elem(), path+keyDelim+name+keyDelim, nil)...)
			}
		case ft.Kind() == reflect.Map:
			// env: its entries are bound by AutomaticEnv when the file names them.
		default:
			keys = append(keys, configKey{path: path, list: ft == reflect.TypeFor[[]string]()})
		}
	}
	return keys
}

func tagName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// unknownKeys reports each key of settings that the struct type t has no field for.
func unknownKeys(settings map[string]any, t reflect.Type, prefix string, n names) []error {
	fields := map[string]reflect.Type{}
	for _, f := range reflect.VisibleFields(t) {
		if tag := tagName(f); tag != "" {
			fields[tag] = f.Type
		}
	}
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		path := prefix + k
		ft, ok := fields[k]
		if !ok {
			msg := "unknown key " + displayPath(path, n)
			if s := suggest(k, slices.Collect(maps.Keys(fields))); s != "" {
				msg += " (did you mean " + s + "?)"
			}
			errs = append(errs, errors.New(msg))
			continue
		}
		sub, isMap := settings[k].(map[string]any)
		switch {
		case !isMap: // a wrong type is reported when decoding
		case ft.Kind() == reflect.Struct && ft.PkgPath() != "time":
			errs = append(errs, unknownKeys(sub, ft, path+keyDelim, n)...)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
			for _, name := range slices.Sorted(maps.Keys(sub)) {
				if m, ok := sub[name].(map[string]any); ok {
					errs = append(errs, unknownKeys(m, ft.Elem(), path+keyDelim+name+keyDelim, n)...)
				}
			}
		}
	}
	return errs
}

// suggest returns the candidate closest to key (the first in sorted order on a tie), if it
// is close enough to be a typo: at most len(key)/3+1 edits.
func suggest(key string, candidates []string) string {
	best, bestDist := "", len(key)/3+2
	for _, c := range slices.Sorted(slices.Values(candidates)) {
		if d := editDistance(key, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, counting an adjacent
// transposition ("wrok" for "work") as one edit.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// splitList parses a list given in an environment variable: a JSON array of strings, or
// words separated by commas and/or white space.
func splitList(s string) ([]string, error) {
	if t := strings.TrimSpace(s); strings.HasPrefix(t, "[") {
		var list []string
		if err := json.Unmarshal([]byte(t), &list); err != nil {
			return nil, fmt.Errorf("%q is not a JSON list of strings: %w", s, err)
		}
		return list, nil
	}
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }), nil
}

// decoderPath turns mapstructure's name for a value, such as "interfaces[mail.send].env",
// into a viper key path.
func decoderPath(name string) string {
	var parts []string
	for name != "" {
		var part string
		if rest, ok := strings.CutPrefix(name, "["); ok {
			part, name, _ = strings.Cut(rest, "]")
		} else {
			i := strings.IndexAny(name, ".[")
			if i < 0 {
				i = len(name)
			}
			part, name = name[:i], name[i:]
		}
		name = strings.TrimPrefix(name, ".")
		parts = append(parts, part)
	}
	return strings.Join(parts, keyDelim)
}

// decodeErrors rewrites mapstructure's errors as one "key.path: problem" line each. Its
// complaints about unknown keys are dropped: unknownKeys reports those better.
func decodeErrors(err error, n names) []error {
	var out []error
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case *mapstructure.DecodeError:
			if strings.HasPrefix(e.Unwrap().Error(), "has invalid keys:") {
				return
			}
			out = append(out, fmt.Errorf("%s: %s", displayPath(decoderPath(e.Name()), n), describe(e.Unwrap())))
		case interface{ Unwrap() []error }:
			for _, e := range e.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		default:
			out = append(out, err)
		}
	}
	walk(err)
	return out
}

// describe words mapstructure's type errors for someone editing YAML.
func describe(err error) string {
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("want %s, got %q", kindName(pe.Expected.Type()), fmt.Sprint(pe.Value))
	}
	var ue *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ue) {
		return fmt.Sprintf("want %s, got %s", kindName(ue.Expected.Type()), yamlKind(ue.Value))
	}
	return err.Error()
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping (key: value lines)"
	case reflect.Pointer:
		return kindName(t.Elem())
	}
	return t.String()
}

func yamlKind(v any) string {
	switch v.(type) {
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	case string:
		return fmt.Sprintf("the string %q", v)
	}
	return fmt.Sprintf("%v", v)
}
