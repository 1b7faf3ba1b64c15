package config

import (
	"reflect"
	"strings"
)

// Reload says what a reload (SIGHUP, `taskctl reload`) does with a key whose value changed
// in the file. docs/config.md marks every key with its String; a test keeps both in step.
type Reload int

const (
	// ReloadLive: applied in place; no worker is restarted.
	ReloadLive Reload = iota
	// ReloadNewGeneration: the interface's workers are replaced by a new generation, which
	// takes over once it is ready; old workers finish their checkouts first.
	ReloadNewGeneration
	// ReloadRestart: taken only when taskd next starts; a reload reports it.
	ReloadRestart
)

// String returns the mark docs/config.md uses: "reloads live", "new generation" or
// "needs restart".
func (r Reload) String() string {
	switch r {
	case ReloadLive:
		return "reloads live"
	case ReloadNewGeneration:
		return "new generation"
	}
	return "needs restart"
}

// The keys whose reload is not the default of their level: a daemon key needs a restart
// unless listed here; an interface key reloads live unless listed here.
var (
	daemonLive = map[string]bool{"shutdown_grace": true, "log.level": true, "interfaces": true,
		"tls.cert_file": true, "tls.key_file": true, "tls.client_ca_file": true, "tls.min_version": true,
		"admin": true, "hide_forbidden": true, "max_clients": true, "hello_timeout": true}
	interfaceNewGens = map[string]bool{"command": true, "dir": true, "env": true,
		"user": true, "group": true, "umask": true, "rlimits": true, "direct": true}
)

// DaemonKeyReload returns what a reload does with a changed daemon (top-level) key, such
// as "listen" or "log.level". "interfaces" reloads live: see InterfaceKeyReload for the
// keys of each interface.
func DaemonKeyReload(key string) Reload {
	if daemonLive[key] {
		return ReloadLive
	}
	return ReloadRestart
}

// InterfaceKeyReload returns what a reload does with a changed key of an interface, such
// as "max_workers" or "env". A key inside a mapping ("rlimits.nofile") reloads as the
// mapping does.
func InterfaceKeyReload(key string) Reload {
	top, _, _ := strings.Cut(key, ".")
	if interfaceNewGens[key] || interfaceNewGens[top] {
		return ReloadNewGeneration
	}
	return ReloadLive
}

// IsAccessKey reports whether an interface key (such as "allow" or "allow.users") says who
// may use the interface rather than what its workers are or how its pool runs: a reload
// that changes only such keys touches no worker and no pool setting.
func IsAccessKey(key string) bool {
	top, _, _ := strings.Cut(key, ".")
	return top == "allow"
}

// ChangedDaemonKeys returns the daemon keys (key paths such as "log.level"; interfaces
// left out) whose values differ between a and b, in the order of the Config type.
func ChangedDaemonKeys(a, b Config) []string {
	a.Interfaces, b.Interfaces = nil, nil
	return changedKeys(reflect.ValueOf(a), reflect.ValueOf(b), "")
}

// ChangedInterfaceKeys returns the keys whose values differ between two settings of an
// interface, in the order of the Interface type.
func ChangedInterfaceKeys(a, b Interface) []string {
	return changedKeys(reflect.ValueOf(a), reflect.ValueOf(b), "")
}

func changedKeys(a, b reflect.Value, prefix string) []string {
	var keys []string
	for i := range a.NumField() {
		f := a.Type().Field(i)
		key := join(prefix, tagName(f))
		if f.Type.Kind() == reflect.Struct && f.Type.NumField() > 0 && f.Type.Field(0).IsExported() {
			keys = append(keys, changedKeys(a.Field(i), b.Field(i), key)...)
			continue
		}
		if !equal(a.Field(i), b.Field(i)) {
			keys = append(keys, key)
		}
	}
	return keys
}

// equal is reflect.DeepEqual, except that an empty map or slice equals a nil one (`env: {}`
// and no env are the same setting).
func equal(a, b reflect.Value) bool {
	if k := a.Kind(); (k == reflect.Map || k == reflect.Slice) && a.Len() == 0 && b.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}
