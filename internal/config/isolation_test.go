package config

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

// fakeHost is a host with the given euid whose hard limits are all 1000.
func fakeHost(euid int) host {
	return host{euid: euid, hardLimit: func(int) (uint64, error) { return 1000, nil }}
}

func problems(errs []error) string { return errors.Join(errs...).Error() }

func TestIsolationKeysLoad(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: user and group are refused when taskd is not root (see TestValidateIsolation)")
	}
	cfg, err := parse([]byte(`
interfaces:
  img:
    command: [w]
    user: nobody
    umask: "0027"
    rlimits: {nofile: 256, nproc: 64, as: 2GiB, cpu: 10m, core: 0, fsize: 100MiB}
`), []string{"TASKD_INTERFACES_IMG_RLIMITS_NOFILE=512", "TASKD_INTERFACES_IMG_GROUP=root"})
	require.NoError(t, err)
	in := cfg.Interfaces["img"]
	assert.Equal(t, "nobody", in.User)
	assert.Equal(t, "root", in.Group, "from the environment")
	assert.Equal(t, []Rlimit{{"nofile", 512}, {"nproc", 64}, {"as", 2 << 30}, {"cpu", 600}, {"core", 0}, {"fsize", 100 << 20}}, in.Rlimits.List())
	m, ok := in.UmaskBits()
	assert.True(t, ok)
	assert.Equal(t, uint32(0o027), m)

	id, err := in.Identity()
	require.NoError(t, err)
	nobody, err := user.Lookup("nobody")
	require.NoError(t, err)
	assert.Equal(t, nobody.Uid, strconv.FormatUint(uint64(id.UID), 10))
	assert.Equal(t, uint32(0), id.GID, "group overrides the user's primary group")
	assert.Equal(t, "nobody", id.User)
	assert.Equal(t, nobody.HomeDir, id.Home)
	assert.NotContains(t, id.Groups, uint32(0), "root's groups are never the worker's, unless the user is in them")

	_, ok = Interface{}.UmaskBits()
	assert.False(t, ok)
	id, err = Interface{}.Identity()
	assert.NoError(t, err)
	assert.Nil(t, id, "no user, no group: taskd's own identity")
}

func TestValidateIsolation(t *testing.T) {
	in := func(mod func(*Interface)) Interface {
		x := valid().Interfaces["passwd"]
		mod(&x)
		return x
	}
	tests := []struct {
		name string
		euid int
		in   Interface
		want []string // each a substring of the problems; none: valid
	}{
		{"nothing set", 1000, in(func(*Interface) {}), nil},
		{"user as root", 0, in(func(x *Interface) { x.User = "nobody" }), nil},
		{"numeric ids as root", 0, in(func(x *Interface) { x.User, x.Group = "0", "0" }), nil},
		{"user when not root", 1000, in(func(x *Interface) { x.User = "nobody" }),
			[]string{`interfaces.passwd.user: taskd is not running as root (euid 1000), so it cannot start workers as another user or group — run taskd as root`}},
		{"group when not root", 1000, in(func(x *Interface) { x.Group = "root" }),
			[]string{`interfaces.passwd.group: taskd is not running as root (euid 1000)`}},
		{"unknown user", 0, in(func(x *Interface) { x.User = "no-such-user-wwww" }),
			[]string{`interfaces.passwd.user: no such user "no-such-user-wwww" in the system's user database`}},
		{"unknown uid", 0, in(func(x *Interface) { x.User = "4000000000" }),
			[]string{`interfaces.passwd.user: no such uid "4000000000"`}},
		{"unknown group", 0, in(func(x *Interface) { x.User, x.Group = "nobody", "no-such-group-wwww" }),
			[]string{`interfaces.passwd.group: no such group "no-such-group-wwww" in the system's group database`}},
		{"bad umask", 1000, in(func(x *Interface) { x.Umask = "0999" }),
			[]string{`interfaces.passwd.umask: "0999" is not an octal mask — write it as a quoted string such as "0027"`}},
		{"umask too wide", 1000, in(func(x *Interface) { x.Umask = "01777" }),
			[]string{`interfaces.passwd.umask: "01777" has bits beyond 0777`}},
		{"limits within taskd's", 1000, in(func(x *Interface) {
			x.Umask, x.Rlimits = "077", Rlimits{Nofile: intp(1000), Nproc: intp(1), AS: sizep(1000), Core: sizep(0), CPU: durp(time.Second)}
		}), []string{"interfaces.passwd.rlimits.as: must be at least 1MiB"}},
		{"limits out of range", 1000, in(func(x *Interface) {
			x.Rlimits = Rlimits{Nofile: intp(2), Nproc: intp(0), CPU: durp(1500 * time.Millisecond)}
		}), []string{
			"interfaces.passwd.rlimits.nofile: must be ≥ 3 (got 2): a worker needs its stdin, stdout and stderr",
			"interfaces.passwd.rlimits.nproc: must be ≥ 1 (got 0)",
			`interfaces.passwd.rlimits.cpu: must be a whole number of seconds, at least 1s, such as "10m" (got 1.5s)`,
		}},
		{"above the hard limit, not root", 1000, in(func(x *Interface) { x.Rlimits = Rlimits{Nofile: intp(1001), Fsize: sizep(5000)} }), []string{
			"interfaces.passwd.rlimits.nofile: 1001 is above taskd's own hard limit 1000, and taskd is not root",
			"interfaces.passwd.rlimits.fsize: 5000 is above taskd's own hard limit 1000",
		}},
		{"above the hard limit, root", 0, in(func(x *Interface) { x.Rlimits = Rlimits{Nofile: intp(5000)} }), nil},
		{"above the hard limit, root, another user", 0, in(func(x *Interface) { x.User, x.Rlimits = "nobody", Rlimits{Nofile: intp(5000)} }),
			[]string{"interfaces.passwd.rlimits.nofile: 5000 is above taskd's own hard limit 1000, and its workers run as another user"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := tt.in.validateIsolation("interfaces.passwd", fakeHost(tt.euid))
			if tt.want == nil {
				assert.Empty(t, errs)
				return
			}
			require.Len(t, errs, len(tt.want), problems(errs))
			for _, w := range tt.want {
				assert.Contains(t, problems(errs), w)
			}
		})
	}
}

// TestIsolationProblemsHaveLines: each isolation problem names its key and line.
func TestIsolationProblemsHaveLines(t *testing.T) {
	_, err := parse([]byte("interfaces:\n  img:\n    command: [w]\n    umask: \"888\"\n    rlimits: {cpu: 90}\n"), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `line 5: interfaces.img.rlimits.cpu: duration 90: a bare number is ambiguous`)
	_, err = parse([]byte("interfaces:\n  img:\n    command: [w]\n    umask: \"888\"\n    user: no-such-user-wwww\n"), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `line 4: interfaces.img.umask: "888" is not an octal mask`)
	assert.Contains(t, err.Error(), `line 5: interfaces.img.user: no such user "no-such-user-wwww"`)
	_, err = parse([]byte("interfaces:\n  img:\n    command: [w]\n    rlimits: {core: -1}\n"), nil)
	assert.ErrorContains(t, err, "line 4: interfaces.img.rlimits.core: size -1: must not be negative")
}

func TestRealHardLimit(t *testing.T) {
	var lim unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &lim))
	hard, err := thisHost().hardLimit(unix.RLIMIT_NOFILE)
	require.NoError(t, err)
	assert.Equal(t, lim.Max, hard)
}

func TestIsolationReloadsAsNewGeneration(t *testing.T) {
	for _, k := range []string{"user", "group", "umask", "rlimits", "rlimits.nofile", "rlimits.cpu"} {
		assert.Equal(t, ReloadNewGeneration, InterfaceKeyReload(k), k)
	}
	a := valid().Interfaces["passwd"]
	b := a
	b.User, b.Rlimits.Nofile = "nobody", intp(10)
	assert.Equal(t, []string{"user", "rlimits.nofile"}, ChangedInterfaceKeys(a, b))
}

// FuzzParseUmask: the umask parser never panics and accepts exactly the octal masks up
// to 0777.
func FuzzParseUmask(f *testing.F) {
	for _, s := range []string{"0027", "027", "0", "777", "1000", "-1", "0x1f", "8", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseUmask(s)
		if err == nil {
			assert.LessOrEqual(t, m, uint32(0o777))
		}
	})
}

// TestSecurityDocExampleLoads keeps every YAML example of docs/security.md valid: each is
// read and validated as taskd reads its file (parseOn, as Load does), checked as taskd
// running as root checks it (the doc's examples set user, which needs root; the limits
// are checked against this process's real hard limits). What the doc cannot give is
// substituted: certificate files made for the test for the TLS paths, nobody for the
// users made for the examples. An example that starts with listen is a whole file and is
// loaded as it is; the others are excerpts, loaded into a config that has taskd's
// certificate and a client CA (from the environment, where the excerpt has no tls) and
// an interface (where the excerpt has none).
func TestSecurityDocExampleLoads(t *testing.T) {
	doc, err := os.ReadFile("../../docs/security.md")
	require.NoError(t, err)
	ca := taskdtest.NewCA(t, "doc")
	cert, key := ca.Issue(t, taskdtest.ServerLeaf("taskd"))
	files := map[string]string{"cert_file": cert, "key_file": key, "client_ca_file": ca.CertFile}
	madeForExamples := []string{"taskd-thumbs", "taskd-passwd"} // users the doc says to create
	asRoot := thisHost()
	asRoot.euid = 0

	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1)
	var whole, hardened int
	for i, b := range blocks {
		y := string(b[1])
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			y = regexp.MustCompile(`(cert_file|key_file|client_ca_file): \S+`).ReplaceAllStringFunc(y, func(m string) string {
				k, _, _ := strings.Cut(m, ":")
				return fmt.Sprintf("%s: %q", k, files[k])
			})
			for _, u := range madeForExamples {
				y = strings.ReplaceAll(y, "user: "+u, "user: nobody")
			}
			var env []string
			if !strings.HasPrefix(y, "listen:") { // an excerpt
				if !regexp.MustCompile(`(?m)^tls:`).MatchString(y) {
					env = []string{"TASKD_TLS_CERT_FILE=" + cert, "TASKD_TLS_KEY_FILE=" + key, "TASKD_TLS_CLIENT_CA_FILE=" + ca.CertFile}
				}
				if !regexp.MustCompile(`(?m)^interfaces:`).MatchString(y) {
					y += "interfaces:\n  example: {command: [w]}\n"
				}
			} else {
				whole++
			}
			cfg, err := parseOn([]byte(y), env, asRoot)
			require.NoError(t, err, "example %d of docs/security.md:\n%s", i, y)
			if strings.Contains(y, "thumbnails:") && cfg.Admin != nil && cfg.Interfaces["thumbnails"].Cgroup.IsSet() {
				hardened++ // the hardened example config: every kind of setting at once
				in := cfg.Interfaces["thumbnails"]
				assert.True(t, cfg.HideForbidden)
				assert.NotEmpty(t, cfg.TLS.ClientCAFile)
				assert.NotEmpty(t, in.Allow.TLSNames)
				assert.Equal(t, "nobody", in.User)
				assert.NotEmpty(t, in.Rlimits.List())
			}
		})
	}
	assert.GreaterOrEqual(t, len(blocks), 6, "the examples of docs/security.md")
	assert.GreaterOrEqual(t, whole, 2, "whole files among them")
	assert.Equal(t, 1, hardened, "the hardened example config")
}
