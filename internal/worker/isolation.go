package worker

import (
	"os/exec"
	"slices"
	"strings"
	"syscall"

	"github.com/taskd-dev/taskd/internal/sandbox"
)

// Identity is the user and groups a worker runs as. Starting a worker with one needs
// taskd to be root (CAP_SETUID and CAP_SETGID).
type Identity struct {
	UID, GID uint32
	// Groups are the worker's supplementary groups, all of them: nil or empty means
	// none. taskd's own are never passed on.
	Groups []uint32
	// User and Home, if User is set, become the worker's USER, LOGNAME and HOME, unless
	// its Config.Env sets them.
	User, Home string
}

// isolate applies cfg's Identity and Sandbox to cmd, made by start and not yet started.
// The identity is set by os/exec in the forked child (setgroups, setgid, setuid, then
// the parent-death signal, which a change of credentials would clear); the umask and
// rlimits by sandbox's helper, which cmd then runs first (sandbox.Wrap). no_new_privs
// is taskd's own, inherited (sandbox.RestrictSelf), or the helper's.
func isolate(cmd *exec.Cmd, cfg Config) error {
	if id := cfg.Identity; id != nil {
		// A non-nil, possibly empty list: os/exec calls setgroups with exactly it.
		groups := append([]uint32{}, id.Groups...)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: groups}
		if id.User != "" {
			cmd.Env = userEnv(cmd.Env, cfg.Env, id)
		}
	}
	if cfg.Sandbox.Empty() {
		return nil
	}
	return sandbox.Wrap(cmd, cfg.Sandbox)
}

// userEnv sets HOME, USER and LOGNAME in env to id's, except those that the interface's
// own env (own) sets; it replaces the HOME that taskd passes on from its own environment.
func userEnv(env []string, own map[string]string, id *Identity) []string {
	set := map[string]string{"HOME": id.Home, "USER": id.User, "LOGNAME": id.User}
	for k := range own {
		delete(set, k)
	}
	env = slices.DeleteFunc(env, func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		_, replaced := set[k]
		return replaced
	})
	for _, k := range []string{"HOME", "USER", "LOGNAME"} {
		if v, ok := set[k]; ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}
