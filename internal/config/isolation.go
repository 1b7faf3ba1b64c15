package config

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// The isolation keys of an interface: whom its workers run as (user, group), their umask
// and their resource limits (rlimits). docs/security.md says what each protects against;
// internal/worker and internal/sandbox apply them.

// Rlimits are the resource limits of each worker of an interface, each set as the soft
// and the hard limit alike (so a worker can lower a limit, never raise it). A limit left
// out (nil) is inherited from taskd.
type Rlimits struct {
	Nofile *int           `yaml:"nofile"` // open file descriptors
	Nproc  *int           `yaml:"nproc"`  // processes and threads of the worker's user, all together
	AS     *ByteSize      `yaml:"as"`     // address space (virtual memory)
	CPU    *time.Duration `yaml:"cpu"`    // CPU time, in whole seconds; then SIGXCPU, SIGKILL
	Core   *ByteSize      `yaml:"core"`   // core dump size; 0 = no core dumps
	Fsize  *ByteSize      `yaml:"fsize"`  // largest file the worker may write; then SIGXFSZ
}

// Rlimit is one limit that Rlimits sets, in the resource's own unit: a count, bytes, or
// seconds (cpu).
type Rlimit struct {
	Name  string // the key: nofile, nproc, as, cpu, core or fsize
	Value uint64
}

// List returns the limits that are set, in the order of the Rlimits type.
func (r Rlimits) List() []Rlimit {
	var list []Rlimit
	count := func(name string, p *int) {
		if p != nil {
			list = append(list, Rlimit{Name: name, Value: uint64(max(0, *p))})
		}
	}
	size := func(name string, p *ByteSize) {
		if p != nil {
			list = append(list, Rlimit{Name: name, Value: uint64(max(0, *p))})
		}
	}
	count("nofile", r.Nofile)
	count("nproc", r.Nproc)
	size("as", r.AS)
	if r.CPU != nil {
		list = append(list, Rlimit{Name: "cpu", Value: uint64(max(0, *r.CPU/time.Second))})
	}
	size("core", r.Core)
	size("fsize", r.Fsize)
	return list
}

// rlimitResources maps each rlimits key to its Linux resource.
var rlimitResources = map[string]int{
	"nofile": unix.RLIMIT_NOFILE, "nproc": unix.RLIMIT_NPROC, "as": unix.RLIMIT_AS,
	"cpu": unix.RLIMIT_CPU, "core": unix.RLIMIT_CORE, "fsize": unix.RLIMIT_FSIZE,
}

// UmaskBits returns the interface's umask and true, or false if it sets none (workers
// inherit taskd's). The umask must be valid (Validate).
func (in Interface) UmaskBits() (uint32, bool) {
	if in.Umask == "" {
		return 0, false
	}
	m, err := parseUmask(in.Umask)
	return m, err == nil
}

func parseUmask(s string) (uint32, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q is not an octal mask — write it as a quoted string such as \"0027\"", s)
	case m > 0o777:
		return 0, fmt.Errorf("%q has bits beyond 0777 — give permission bits only, such as \"0027\"", s)
	}
	return uint32(m), nil
}

// Identity is whom an interface's workers run as: user and group resolved through the
// system's user database.
type Identity struct {
	UID, GID uint32
	// Groups are the supplementary groups: the user's own (those the user database lists
	// it in, its primary group included); none when only group is set. Never taskd's.
	Groups []uint32
	User   string // the user's name, for USER and LOGNAME; "" when only group is set
	Home   string // the user's home directory, for HOME; "" when only group is set
}

// Identity resolves the interface's user and group (names or numeric ids) through the
// system's user database. It returns nil, nil when neither is set (workers run as taskd's
// own user and groups). group defaults to the user's primary group; a group without a
// user runs workers as taskd's uid with that group and no supplementary groups.
func (in Interface) Identity() (*Identity, error) {
	if in.User == "" && in.Group == "" {
		return nil, nil
	}
	id := &Identity{UID: uint32(os.Getuid()), Groups: []uint32{}}
	if in.User != "" {
		u, err := lookupUser(in.User)
		if err != nil {
			return nil, &problem{key: "user", msg: err.Error()}
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		id.UID, id.GID, id.User, id.Home = uint32(uid), uint32(gid), u.Username, u.HomeDir
		gids, err := u.GroupIds()
		if err != nil {
			return nil, &problem{key: "user", msg: fmt.Sprintf("listing the groups of user %q: %v", in.User, err)}
		}
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				id.Groups = append(id.Groups, uint32(n))
			}
		}
	}
	if in.Group != "" {
		g, err := lookupGroup(in.Group)
		if err != nil {
			return nil, &problem{key: "group", msg: err.Error()}
		}
		gid, _ := strconv.ParseUint(g.Gid, 10, 32)
		id.GID = uint32(gid)
	}
	return id, nil
}

func lookupUser(s string) (*user.User, error) {
	lookup, what := user.Lookup, "user"
	if _, err := strconv.ParseUint(s, 10, 32); err == nil {
		lookup, what = user.LookupId, "uid"
	}
	u, err := lookup(s)
	if err != nil {
		return nil, fmt.Errorf("no such %s %q in the system's user database (%v) — create it, or name an existing one", what, s, err)
	}
	return u, nil
}

func lookupGroup(s string) (*user.Group, error) {
	lookup, what := user.LookupGroup, "group"
	if _, err := strconv.ParseUint(s, 10, 32); err == nil {
		lookup, what = user.LookupGroupId, "gid"
	}
	g, err := lookup(s)
	if err != nil {
		return nil, fmt.Errorf("no such %s %q in the system's group database (%v) — create it, or name an existing one", what, s, err)
	}
	return g, nil
}

// host is what the isolation keys are checked against: the process that checks the
// config, which is taskd itself or `taskd --check-config` run as taskd runs.
type host struct {
	euid      int
	hardLimit func(resource int) (uint64, error)
}

func thisHost() host {
	return host{euid: os.Geteuid(), hardLimit: func(resource int) (uint64, error) {
		var lim unix.Rlimit
		err := unix.Getrlimit(resource, &lim)
		return lim.Max, err
	}}
}

// validateIsolation checks user, group, umask and rlimits against h.
func (in Interface) validateIsolation(prefix string, h host) []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &problem{key: prefix + "." + key, msg: fmt.Sprintf(format, args...)})
	}
	switch _, err := in.Identity(); {
	case err != nil:
		p := err.(*problem)
		bad(p.key, "%s", p.msg)
	case (in.User != "" || in.Group != "") && h.euid != 0:
		key := "user"
		if in.User == "" {
			key = "group"
		}
		bad(key, "taskd is not running as root (euid %d), so it cannot start workers as another user or group — "+
			"run taskd as root (docs/security.md has the systemd drop-in), or remove user and group", h.euid)
	}
	if in.Umask != "" {
		if _, err := parseUmask(in.Umask); err != nil {
			bad("umask", "%v", err)
		}
	}
	r := in.Rlimits
	if r.Nofile != nil && *r.Nofile < 3 {
		bad("rlimits.nofile", "must be ≥ 3 (got %d): a worker needs its stdin, stdout and stderr", *r.Nofile)
	}
	if r.Nproc != nil && *r.Nproc < 1 {
		bad("rlimits.nproc", "must be ≥ 1 (got %d): a worker is a process; leave the key out to inherit taskd's limit", *r.Nproc)
	}
	if r.AS != nil && *r.AS < MiB {
		bad("rlimits.as", "must be at least 1MiB (got %s): no program starts in less", *r.AS)
	}
	if r.CPU != nil && (*r.CPU < time.Second || *r.CPU%time.Second != 0) {
		bad("rlimits.cpu", "must be a whole number of seconds, at least 1s, such as \"10m\" (got %s)", *r.CPU)
	}
	// Only root can raise a hard limit, and a worker with its own user is not root when
	// the limit is applied.
	if h.euid == 0 && in.User == "" && in.Group == "" {
		return errs
	}
	for _, l := range r.List() {
		hard, err := h.hardLimit(rlimitResources[l.Name])
		if err == nil && hard != unix.RLIM_INFINITY && l.Value > hard {
			why := "taskd is not root"
			if h.euid == 0 {
				why = "its workers run as another user"
			}
			bad("rlimits."+l.Name, "%d is above taskd's own hard limit %d, and %s, so the worker could not be given it — "+
				"lower it, or raise taskd's limit (LimitNOFILE= and the like in its systemd unit)", l.Value, hard, why)
		}
	}
	return errs
}
