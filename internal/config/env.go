package config

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// applyEnv overrides the fields of the struct v from env: each key from the variable named
// prefix + the key, in upper case with '.' and '-' as '_' (see envWord). Interfaces and
// their env entries can be changed but not created: only those in v already are looked at.
func (d *decoder) applyEnv(v reflect.Value, env map[string]string, prefix, key string) {
	for i := range v.NumField() {
		tag := tagName(v.Type().Field(i))
		if tag == "" {
			continue
		}
		f, path, name := v.Field(i), join(key, tag), prefix+envWord(tag)
		if f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.Struct {
			d.applyEnvPointer(f, env, name, path) // allow, admin
			continue
		}
		switch f.Kind() {
		case reflect.Struct:
			d.applyEnv(f, env, name+"_", path)
		case reflect.Map:
			names := make([]string, 0, f.Len())
			for _, k := range f.MapKeys() {
				names = append(names, k.String())
			}
			slices.Sort(names)
			for _, k := range names {
				elem, elemName := reflect.New(f.Type().Elem()).Elem(), name+"_"+envWord(k)
				elem.Set(f.MapIndex(reflect.ValueOf(k)))
				if elem.Kind() == reflect.Struct {
					d.applyEnv(elem, env, elemName+"_", path+"."+k)
				} else if s, ok := env[elemName]; ok {
					d.src[path+"."+k] = source{env: elemName}
					elem.SetString(s)
				}
				f.SetMapIndex(reflect.ValueOf(k), elem)
			}
		default:
			s, ok := env[name]
			if !ok {
				continue
			}
			// Values are strings: their type comes from the key, so 0660 stays "0660".
			n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
			if f.Kind() == reflect.Slice {
				list, err := splitList(s)
				if err != nil {
					d.bad(source{env: name}, path, "%v", err)
					continue
				}
				n = &yaml.Node{Kind: yaml.SequenceNode}
				for _, item := range list {
					n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: item})
				}
			}
			d.src[path] = source{env: name}
			d.field(n, f, path, name)
		}
	}
}

// applyEnvPointer is applyEnv for a field that points to a struct (such as an access
// rule): it is made, if it is nil, only when a variable sets one of its keys.
func (d *decoder) applyEnvPointer(f reflect.Value, env map[string]string, name, path string) {
	set := false
	for k := range env {
		if strings.HasPrefix(k, name+"_") {
			set = true
			break
		}
	}
	if !set {
		return
	}
	p := reflect.New(f.Type().Elem())
	if !f.IsNil() {
		p.Elem().Set(f.Elem())
	}
	d.applyEnv(p.Elem(), env, name+"_", path)
	f.Set(p)
}

// envVars returns the TASKD_* variables of environ that are set and not empty. As with
// os.Getenv, the first of duplicates wins.
func envVars(environ []string) map[string]string {
	env := map[string]string{}
	for _, kv := range environ {
		k, val, _ := strings.Cut(kv, "=")
		if _, dup := env[k]; !dup && strings.HasPrefix(k, "TASKD_") {
			env[k] = val
		}
	}
	maps.DeleteFunc(env, func(_, val string) bool { return val == "" })
	return env
}

var envReplacer = strings.NewReplacer(".", "_", "-", "_")

// envWord is how a key or name is written in a TASKD_ variable: mail.send-v2 → MAIL_SEND_V2.
func envWord(s string) string { return strings.ToUpper(envReplacer.Replace(s)) }

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
