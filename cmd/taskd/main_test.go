package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "taskd.yaml")
	require.NoError(t, os.WriteFile(path, []byte(yaml), 0o600))
	return path
}

func TestCheckConfigCommand(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantOut string
		wantErr string
	}{
		{"valid", []string{"--check-config", "-c", "GOOD"}, "config OK: 2 interfaces\n", ""},
		{"long flag", []string{"--check-config", "--config", "GOOD"}, "config OK: 2 interfaces\n", ""},
		{"invalid", []string{"--check-config", "-c", "BAD"}, "", "interfaces.passwd.max_workers: must be ≥ 1 (got -1)"},
		{"no file", []string{"--check-config"}, "", "no config file: run taskd -c FILE"},
		{"version", []string{"--version"}, "taskd version dev\n", ""},
		{"stray argument", []string{"-c", "x.yaml", "extra"}, "", "unknown command"},
	}
	bad := writeConfig(t, "interfaces: {passwd: {command: [w], max_workers: -1, min_idle: 0}}")
	good := writeConfig(t, "interfaces: {a: {command: [w]}, b: {command: [w]}}")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			cmd := newCommand(&out, nil)
			for i, a := range tt.args {
				switch a {
				case "BAD":
					tt.args[i] = bad
				case "GOOD":
					tt.args[i] = good
				}
			}
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantOut, out.String())
		})
	}
}

// TestShippedConfigIsValid keeps configs/taskd.yaml (what make run uses) valid.
func TestShippedConfigIsValid(t *testing.T) {
	var out bytes.Buffer
	cmd := newCommand(&out, nil)
	cmd.SetArgs([]string{"--check-config", "-c", "../../configs/taskd.yaml"})
	require.NoError(t, cmd.Execute())
	assert.Regexp(t, `^config OK: \d+ interfaces\n$`, out.String())
}

// TestCheckConfigExplainsSecurityKeys: `taskd --check-config` explains each bad allow,
// admin, tls, user, group, umask, rlimits and cgroup setting by its line and key path,
// and says what to do. Certificates are made for the test.
func TestCheckConfigExplainsSecurityKeys(t *testing.T) {
	ca := taskdtest.NewCA(t, "check")
	cert, key := ca.Issue(t, taskdtest.ServerLeaf("server"))
	_, otherKey := ca.Issue(t, taskdtest.ServerLeaf("other"))
	expired, expiredKey := ca.Issue(t, taskdtest.Leaf{Name: "expired", SANs: []string{"localhost"}, Expired: true})
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not a PEM file\n"), 0o600))
	mtls := fmt.Sprintf("listen: [\"tls://127.0.0.1:7443\"]\ntls: {cert_file: %q, key_file: %q, client_ca_file: %q}\n", cert, key, ca.CertFile)
	var hard unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &hard))

	tests := []struct {
		name, yaml string
		want       []string // each a whole line of the output (after its indent), in any order
	}{
		{"allow: unknown user and group, bad ids, empty TLS name", mtls + `interfaces:
  hash:
    command: [w]
    allow:
      users: [root, bob-no-such-user]
      groups: [no-such-group-here]
      uids: [-1]
      gids: [-2]
      tls_names: [""]
`, []string{
			`line 7: interfaces.hash.allow.users[1]: no such user "bob-no-such-user" (not in the system's user database); give an existing user name, or its uid under uids`,
			`line 8: interfaces.hash.allow.groups[0]: no such group "no-such-group-here" (not in the system's group database); give an existing group name, or its gid under gids`,
			`line 9: interfaces.hash.allow.uids[0]: must be ≥ 0 (got -1): give a uid, or the user's name under users`,
			`line 10: interfaces.hash.allow.gids[0]: must be ≥ 0 (got -2): give a gid, or the group's name under groups`,
			`line 11: interfaces.hash.allow.tls_names[0]: empty — give a DNS name or URI of the client certificate, such as "spiffe://example.org/app"`,
		}},
		{"allow: wrong shape, unknown key", `interfaces:
  hash: {command: [w], allow: [root]}
  salt: {command: [w], allow: {user: [root]}}
  pepper: {command: [w], allow: {names: [x]}}
`, []string{
			`line 2: interfaces.hash.allow: want a mapping (key: value lines), got a list`,
			`line 3: unknown key interfaces.salt.allow.user (did you mean users?)`,
			`line 4: unknown key interfaces.pepper.allow.names (allow takes users, groups, uids, gids, tls_names)`,
		}},
		{"tls_names without client_ca_file", `admin: {tls_names: ["spiffe://example.org/ops"]}
interfaces:
  hash:
    command: [w]
    allow: {tls_names: ["spiffe://example.org/app"]}
`, []string{
			`line 1: admin.tls_names: names TLS clients, but tls.client_ca_file is not set: taskd then asks no client for a certificate, ` +
				`so no connection has a TLS name and this list can never match — set tls.client_ca_file (with tls.cert_file, tls.key_file and a tls:// listener; docs/security.md), or remove tls_names`,
			`line 5: interfaces.hash.allow.tls_names: names TLS clients, but tls.client_ca_file is not set: taskd then asks no client for a certificate, ` +
				`so no connection has a TLS name and this list can never match — set tls.client_ca_file (with tls.cert_file, tls.key_file and a tls:// listener; docs/security.md), or remove tls_names`,
		}},
		{"admin and connection limits", `admin: {users: [bob-no-such-user]}
max_clients: -5
hello_timeout: 0
interfaces: {hash: {command: [w]}}
`, []string{
			`line 1: admin.users[0]: no such user "bob-no-such-user" (not in the system's user database); give an existing user name, or its uid under uids`,
			`line 2: max_clients: must be ≥ 1 (got -5): the most client connections served at once; leave it out for the default 1024`,
			`line 3: hello_timeout: 0 is not allowed: leave the key out to get the default (docs/config.md), or give a negative value such as -1s for no timeout`,
		}},
		{"tls: a tls:// listener without a certificate", "listen: [\"tls://0.0.0.0:7443\"]\ninterfaces: {hash: {command: [w]}}\n", []string{
			`tls: listen has a tls:// address, which needs taskd's certificate: set tls.cert_file and tls.key_file (docs/security.md)`,
		}},
		{"tls: a key that is not the certificate's", fmt.Sprintf("tls:\n  cert_file: %q\n  key_file: %q\ninterfaces: {hash: {command: [w]}}\n", cert, otherKey), []string{
			fmt.Sprintf(`line 3: tls.key_file: tls: private key does not match public key: %s is not the private key of the certificate in %s; give the key it was issued for`, otherKey, cert),
		}},
		{"tls: expired certificate, client CA file without a certificate", fmt.Sprintf("tls:\n  cert_file: %q\n  key_file: %q\n  client_ca_file: %q\ninterfaces: {hash: {command: [w]}}\n",
			expired, expiredKey, garbage), []string{
			`line 2: tls.cert_file: the certificate in ` + expired + ` expired at `,
			fmt.Sprintf(`line 4: tls.client_ca_file: %s holds no PEM certificate (BEGIN CERTIFICATE): give the CA certificates that sign client certificates`, garbage),
		}},
		{"tls: missing files, one without the other, bad version", "tls: {key_file: /nonexistent/key.pem, min_version: \"1.1\"}\ninterfaces: {hash: {command: [w]}}\n", []string{
			`line 1: tls.min_version: "1.1" is not one of "1.2", "1.3" (TLS 1.3 is negotiated whenever both sides support it)`,
			`line 1: tls.cert_file: not set, but tls.key_file is: give the PEM file of taskd's certificate too`,
		}},
		{"tls: a file that cannot be read", fmt.Sprintf("tls: {cert_file: /nonexistent/cert.pem, key_file: %q}\ninterfaces: {hash: {command: [w]}}\n", key), []string{
			`line 1: tls.cert_file: open /nonexistent/cert.pem: no such file or directory: give the PEM file of taskd's certificate (readable by taskd's user)`,
		}},
		{"user, group, umask", `interfaces:
  img:
    command: [w]
    user: bob-no-such-user
    umask: "0999"
  thumb:
    command: [w]
    group: no-such-group-here
`, []string{
			`line 4: interfaces.img.user: no such user "bob-no-such-user" in the system's user database (user: unknown user bob-no-such-user) — create it, or name an existing one`,
			`line 5: interfaces.img.umask: "0999" is not an octal mask — write it as a quoted string such as "0027"`,
			`line 8: interfaces.thumb.group: no such group "no-such-group-here" in the system's group database (group: unknown group no-such-group-here) — create it, or name an existing one`,
		}},
		{"rlimits: out of range", `interfaces:
  img:
    command: [w]
    rlimits:
      nofile: 2
      nproc: 0
      as: 1000
      cpu: 1500ms
`, []string{
			`line 5: interfaces.img.rlimits.nofile: must be ≥ 3 (got 2): a worker needs its stdin, stdout and stderr`,
			`line 6: interfaces.img.rlimits.nproc: must be ≥ 1 (got 0): a worker is a process; leave the key out to inherit taskd's limit`,
			`line 7: interfaces.img.rlimits.as: must be at least 1MiB (got 1000B): no program starts in less`,
			`line 8: interfaces.img.rlimits.cpu: must be a whole number of seconds, at least 1s, such as "10m" (got 1.5s)`,
		}},
		{"rlimits: wrong types, unknown limit", "interfaces:\n  img:\n    command: [w]\n    rlimits: {nofiles: 3, cpu: 90, core: -1, fsize: big}\n", []string{
			`line 4: unknown key interfaces.img.rlimits.nofiles (did you mean nofile?)`,
			`line 4: interfaces.img.rlimits.cpu: duration 90: a bare number is ambiguous — add a unit, such as "90s" or "90ms"`,
			`line 4: interfaces.img.rlimits.core: size -1: must not be negative`,
			`line 4: interfaces.img.rlimits.fsize: size "big": want a whole number of bytes with an optional unit, such as 100, 512KiB or 16MiB`,
		}},
		{"cgroup: out of range", `interfaces:
  img:
    command: [w]
    cgroup:
      memory_max: 1000
      pids_max: -1
      cpu_weight: 10001
`, []string{
			`line 5: interfaces.img.cgroup.memory_max: must be 0 (no limit) or at least 1MiB (got 1000B)`,
			`line 6: interfaces.img.cgroup.pids_max: must be ≥ 0 (got -1); 0 means no limit`,
			`line 7: interfaces.img.cgroup.cpu_weight: must be from 1 to 10000 (the kernel's cpu.weight; 100 is every cgroup's default), or 0 for the default (got 10001)`,
		}},
		{"cgroup: unknown key", "interfaces:\n  img:\n    command: [w]\n    cgroup: {memory: 1GiB, pid_max: 3}\n", []string{
			`line 4: unknown key interfaces.img.cgroup.memory (cgroup takes memory_max, pids_max, cpu_weight)`,
			`line 4: unknown key interfaces.img.cgroup.pid_max (did you mean pids_max?)`,
		}},
	}
	if hard.Max != unix.RLIM_INFINITY && hard.Max < 1<<40 {
		// Above taskd's own hard limit: only root can raise it, and not for a worker that
		// runs as another user, so this is refused as root too.
		tests = append(tests, struct {
			name, yaml string
			want       []string
		}{"rlimits: above taskd's hard limit", fmt.Sprintf("interfaces:\n  img:\n    command: [w]\n    user: nobody\n    rlimits: {nofile: %d}\n", hard.Max+1), []string{
			fmt.Sprintf(`line 5: interfaces.img.rlimits.nofile: %d is above taskd's own hard limit %d, and `, hard.Max+1, hard.Max),
		}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.yaml)
			cmd := newCommand(io.Discard, nil)
			cmd.SetArgs([]string{"--check-config", "-c", path})
			err := cmd.Execute()
			require.Error(t, err)
			lines := strings.Split(err.Error(), "\n")
			assert.Equal(t, "config "+path+":", lines[0])
			for _, w := range tt.want {
				assert.True(t, slices.ContainsFunc(lines[1:], func(l string) bool { return strings.HasPrefix(l, w) }),
					"want a line starting %q in:\n%s", w, err)
			}
			if !strings.HasSuffix(tt.name, "hard limit") {
				assert.Len(t, lines[1:], len(tt.want), "one line per problem:\n%s", err)
			}
		})
	}
}
