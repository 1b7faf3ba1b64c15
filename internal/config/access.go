package config

import (
	"errors"
	"fmt"
	"maps"
	"os/user"
	"slices"
	"strconv"
	"time"
)

// Who may call what: per interface `allow`, top-level `admin`, `hide_forbidden`, and the
// limits that keep clients from exhausting the daemon (`max_clients`, `hello_timeout`).
// The server (internal/server/access.go) compiles and enforces them; docs/security.md
// explains them.

// Defaults of the access keys, filled in by Normalize.
const (
	// DefaultMaxClients is max_clients' default: client connections served at once.
	DefaultMaxClients = 1024
	// DefaultHelloTimeout is hello_timeout's default: how long a new client connection
	// may take to send its first request.
	DefaultHelloTimeout = 10 * time.Second
)

// normalizeAccess fills the access keys' defaults.
func (c *Config) normalizeAccess() {
	if c.MaxClients == 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = DefaultHelloTimeout
	}
}

// validateAccess checks the top-level access keys.
func (c Config) validateAccess() []error {
	var errs []error
	if c.MaxClients < 1 {
		errs = append(errs, &problem{key: "max_clients", msg: fmt.Sprintf("must be ≥ 1 (got %d): the most client connections served at once; "+
			"leave it out for the default %d", c.MaxClients, DefaultMaxClients)})
	}
	if c.HelloTimeout == 0 {
		errs = append(errs, &problem{key: "hello_timeout", msg: "must not be 0 (call Normalize first); a negative value means no timeout"})
	}
	errs = append(errs, c.Admin.validate("admin")...)
	// TLS names come only from client certificates verified against client_ca_file.
	if c.TLS.ClientCAFile == "" {
		unmatchable := func(key string, a *Access) {
			if a != nil && len(a.TLSNames) > 0 {
				errs = append(errs, &problem{key: key + ".tls_names", msg: "names TLS clients, but tls.client_ca_file is not set: " +
					"taskd then asks no client for a certificate, so no connection has a TLS name and this list can never match — " +
					"set tls.client_ca_file (with tls.cert_file, tls.key_file and a tls:// listener; docs/security.md), or remove tls_names"})
			}
		}
		unmatchable("admin", c.Admin)
		for _, name := range slices.Sorted(maps.Keys(c.Interfaces)) {
			unmatchable("interfaces."+name+".allow", c.Interfaces[name].Allow)
		}
	}
	return errs
}

// validate checks an access rule (nil is valid: anyone) at key, such as
// "interfaces.passwd.allow": user and group names must exist in the system's user
// database now, ids must not be negative, and TLS names must not be empty.
func (a *Access) validate(key string) []error {
	if a == nil {
		return nil
	}
	var errs []error
	bad := func(k string, i int, format string, args ...any) {
		errs = append(errs, &problem{key: fmt.Sprintf("%s.%s[%d]", key, k, i), msg: fmt.Sprintf(format, args...)})
	}
	for i, name := range a.Users {
		if _, err := LookupUser(name); err != nil {
			bad("users", i, "%v", err)
		}
	}
	for i, name := range a.Groups {
		if _, err := LookupGroup(name); err != nil {
			bad("groups", i, "%v", err)
		}
	}
	for i, id := range a.UIDs {
		if id < 0 {
			bad("uids", i, "must be ≥ 0 (got %d): give a uid, or the user's name under users", id)
		}
	}
	for i, id := range a.GIDs {
		if id < 0 {
			bad("gids", i, "must be ≥ 0 (got %d): give a gid, or the group's name under groups", id)
		}
	}
	for i, name := range a.TLSNames {
		if name == "" {
			bad("tls_names", i, `empty — give a DNS name or URI of the client certificate, such as "spiffe://example.org/app"`)
		}
	}
	return errs
}

// LookupUser returns the uid of the user name (or of a numeric uid given as a name) from
// the system's user database, or an error that says the user does not exist.
func LookupUser(name string) (int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if errors.As(err, new(user.UnknownUserError)) {
			return 0, fmt.Errorf("no such user %q (not in the system's user database); give an existing user name, or its uid under uids", name)
		}
		return 0, fmt.Errorf("looking up user %q: %v", name, err)
	}
	return strconv.Atoi(u.Uid)
}

// LookupGroup returns the gid of the group name from the system's group database, or an
// error that says the group does not exist.
func LookupGroup(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		if errors.As(err, new(user.UnknownGroupError)) {
			return 0, fmt.Errorf("no such group %q (not in the system's group database); give an existing group name, or its gid under gids", name)
		}
		return 0, fmt.Errorf("looking up group %q: %v", name, err)
	}
	return strconv.Atoi(g.Gid)
}
