package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"

	"go.yaml.in/yaml/v3"
)

// Load reads the YAML file at path, applies the TASKD_* overrides found in environ
// ("KEY=value" strings, as os.Environ returns them), and returns the normalized, validated
// Config. It reads nothing but path and environ, and is safe for concurrent use.
//
// The error starts with "config PATH:" and lists every problem found, one per line: first
// unknown keys and values of the wrong type, all of them; then, once those are fixed,
// zeros where a default was meant and Validate's rules. Each problem names its key and
// where its value came from: "line 12: ..." in the file, or "(from TASKD_...)".
func Load(path string, environ []string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		var cfg *Config
		if cfg, err = parse(data, environ); err == nil {
			return cfg, nil
		}
	} else {
		err = fmt.Errorf("read config: %w", err)
	}
	return nil, fmt.Errorf("config %s:\n%w", path, err)
}

// parse is Load for the contents of a file.
func parse(data []byte, environ []string) (*Config, error) { return parseOn(data, environ, thisHost()) }

// parseOn is parse with the isolation keys checked against h.
func parseOn(data []byte, environ []string, h host) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	d := decoder{src: map[string]source{}}
	var cfg Config
	v := reflect.ValueOf(&cfg).Elem()
	if len(doc.Content) > 0 {
		d.value(doc.Content[0], v, "", "")
	}
	d.applyEnv(v, envVars(environ), "TASKD_", "")
	if len(d.problems) > 0 {
		return nil, errors.Join(d.problems...)
	}
	cfg.Normalize()
	errs := d.zeros
	if err := cfg.validateOn(h); err != nil {
		list := []error{err}
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			list = joined.Unwrap()
		}
		for _, e := range list {
			if p, ok := e.(*problem); ok {
				located := *p
				located.source = d.where(p.key)
				e = &located
			}
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &cfg, nil
}

// problem is one thing wrong with a config, about one key. Validate returns them without
// a source; Load adds where the value came from.
type problem struct {
	key string // dotted key path, as interfaces.passwd.max_workers; "" when msg names it
	msg string
	source
}

// source is where a value came from: a line in the file, or an environment variable.
type source struct {
	line int    // 0 if not from the file
	env  string // the variable's name, or ""
}

func (p *problem) Error() string {
	s := p.msg
	switch {
	case p.key != "" && p.env != "":
		s = p.key + " (from " + p.env + "): " + s
	case p.key != "":
		s = p.key + ": " + s
	}
	if p.line > 0 {
		s = fmt.Sprintf("line %d: %s", p.line, s)
	}
	return s
}
