package config

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

func TestAccessKeys(t *testing.T) {
	c, err := parse([]byte(`
admin: {users: [nobody], uids: [0], tls_names: ["spiffe://example.org/ops"]}
hide_forbidden: true
max_clients: 50
hello_timeout: 2s
listen: ["tls://127.0.0.1:7443"]
interfaces:
  passwd:
    command: [w]
    allow:
      users: [root, nobody]
      groups: [nogroup]
      uids: [33]
      gids: [0, 65534]
      tls_names: ["app.example.org"]
  open:
    command: [w]
  closed:
    command: [w]
    allow: {}
`), mTLSEnv(t))
	require.NoError(t, err)
	assert.Equal(t, &Access{Users: []string{"nobody"}, UIDs: []int{0}, TLSNames: []string{"spiffe://example.org/ops"}}, c.Admin)
	assert.True(t, c.HideForbidden)
	assert.Equal(t, 50, c.MaxClients)
	assert.Equal(t, 2*time.Second, c.HelloTimeout)
	assert.Equal(t, &Access{Users: []string{"root", "nobody"}, Groups: []string{"nogroup"}, UIDs: []int{33},
		GIDs: []int{0, 65534}, TLSNames: []string{"app.example.org"}}, c.Interfaces["passwd"].Allow)
	assert.Nil(t, c.Interfaces["open"].Allow, "no allow: anyone")
	assert.Equal(t, &Access{}, c.Interfaces["closed"].Allow, "allow: {} is nobody, not anyone")

	d, err := parse([]byte(minimal), nil)
	require.NoError(t, err)
	assert.Nil(t, d.Admin)
	assert.False(t, d.HideForbidden)
	assert.Equal(t, DefaultMaxClients, d.MaxClients)
	assert.Equal(t, DefaultHelloTimeout, d.HelloTimeout)
}

// mTLSEnv returns the variables that give a config taskd's certificate and a client CA
// (tls_names need one), made for the test.
func mTLSEnv(t *testing.T) []string {
	ca := taskdtest.NewCA(t, "access")
	cert, key := ca.Issue(t, taskdtest.ServerLeaf("server"))
	return []string{"TASKD_TLS_CERT_FILE=" + cert, "TASKD_TLS_KEY_FILE=" + key, "TASKD_TLS_CLIENT_CA_FILE=" + ca.CertFile}
}

func TestAccessFromEnv(t *testing.T) {
	c, err := parse([]byte(minimal), []string{
		"TASKD_INTERFACES_PASSWD_ALLOW_USERS=nobody, root",
		"TASKD_INTERFACES_PASSWD_ALLOW_UIDS=[\"33\"]",
		"TASKD_ADMIN_GROUPS=nogroup",
		"TASKD_HIDE_FORBIDDEN=true",
		"TASKD_MAX_CLIENTS=7",
		"TASKD_HELLO_TIMEOUT=-1s",
	})
	require.NoError(t, err)
	assert.Equal(t, &Access{Users: []string{"nobody", "root"}, UIDs: []int{33}}, c.Interfaces["passwd"].Allow)
	assert.Equal(t, &Access{Groups: []string{"nogroup"}}, c.Admin)
	assert.True(t, c.HideForbidden)
	assert.Equal(t, 7, c.MaxClients)
	assert.Equal(t, -time.Second, c.HelloTimeout)
}

// TestAccessProblems: every bad access setting is explained with its key path and line.
func TestAccessProblems(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		env        []string
		want       []string
	}{
		{"unknown user", `
interfaces:
  passwd:
    command: [w]
    allow:
      users: [nobody, wwww]
`, nil, []string{`line 6: interfaces.passwd.allow.users[1]: no such user "wwww"`}},
		{"unknown group, bad ids, empty name", `
admin:
  groups: [no-such-group-here]
  uids: [-1]
  gids: [1, -2]
  tls_names: [""]
interfaces: {a: {command: [w]}}
`, nil, []string{
			`line 3: admin.groups[0]: no such group "no-such-group-here"`,
			`line 4: admin.uids[0]: must be ≥ 0 (got -1)`,
			`line 5: admin.gids[1]: must be ≥ 0 (got -2)`,
			`line 6: admin.tls_names[0]: empty`,
			`line 6: admin.tls_names: names TLS clients, but tls.client_ca_file is not set`,
		}},
		{"tls_names without client_ca_file", `
interfaces:
  hash:
    command: [w]
    allow:
      uids: [0]
      tls_names: ["spiffe://example.org/app"]
`, nil, []string{`line 7: interfaces.hash.allow.tls_names: names TLS clients, but tls.client_ca_file is not set: ` +
			`taskd then asks no client for a certificate, so no connection has a TLS name and this list can never match — ` +
			`set tls.client_ca_file (with tls.cert_file, tls.key_file and a tls:// listener; docs/security.md), or remove tls_names`}},
		{"wrong types", `
hide_forbidden: maybe
max_clients: lots
interfaces:
  a:
    command: [w]
    allow: {uids: [www-data], users: root}
`, nil, []string{
			`line 2: hide_forbidden: want true or false, got "maybe"`,
			`line 3: max_clients: want a whole number, got "lots"`,
			`line 7: interfaces.a.allow.uids[0]: want a whole number, got "www-data"`,
			`interfaces.a.allow.users: got the string "root", want a list`,
		}},
		{"zeros", "max_clients: 0\nhello_timeout: 0\ninterfaces: {a: {command: [w]}}\n", nil, []string{
			`line 1: max_clients: 0 is not allowed`,
			`line 2: hello_timeout: 0 is not allowed: leave the key out to get the default (docs/config.md), or give a negative value such as -1s for no timeout`,
		}},
		{"negative max_clients", "max_clients: -5\ninterfaces: {a: {command: [w]}}\n", nil, []string{
			`line 1: max_clients: must be ≥ 1 (got -5)`}},
		{"unknown key", "admin: {user: [root]}\ninterfaces: {a: {command: [w]}}\n", nil, []string{
			`line 1: unknown key admin.user (did you mean users?)`}},
		{"from env", minimal, []string{"TASKD_INTERFACES_PASSWD_ALLOW_USERS=wwww"}, []string{
			`interfaces.passwd.allow.users[0] (from TASKD_INTERFACES_PASSWD_ALLOW_USERS): no such user "wwww"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse([]byte(tc.yaml), tc.env)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.Len(t, strings.Split(err.Error(), "\n"), len(tc.want), "%v", err)
		})
	}
}

func TestAccessReloadsLive(t *testing.T) {
	for _, k := range []string{"admin", "hide_forbidden", "max_clients", "hello_timeout"} {
		assert.Equal(t, ReloadLive, DaemonKeyReload(k), k)
	}
	assert.Equal(t, ReloadLive, InterfaceKeyReload("allow"))
	assert.True(t, IsAccessKey("allow"))
	assert.True(t, IsAccessKey("allow.users"))
	for _, k := range []string{"max_workers", "cgroup.memory_max", "user", "allowed"} {
		assert.False(t, IsAccessKey(k), k)
	}
	a, err := parse([]byte(minimal), nil)
	require.NoError(t, err)
	b := *a
	b.Admin = &Access{Users: []string{"nobody"}}
	b.MaxClients = 3
	assert.Equal(t, []string{"admin", "max_clients"}, ChangedDaemonKeys(*a, b))
	x := a.Interfaces["passwd"]
	y := x
	y.Allow = &Access{}
	assert.Equal(t, []string{"allow"}, ChangedInterfaceKeys(x, y))
}

// FuzzParseAccess is FuzzParse with seeds of the access keys: lists of numbers, booleans,
// pointers to structs from the file and from the environment.
func FuzzParseAccess(f *testing.F) {
	for _, s := range []string{
		"admin: {users: [root], uids: [0, 1]}\ninterfaces: {a: {command: [w], allow: {gids: [1], tls_names: [x]}}}",
		"hide_forbidden: yes\nmax_clients: 1\nhello_timeout: -1s\ninterfaces: {a: {command: [w], allow: ~}}",
		"admin: &a {uids: [[1]]}\ninterfaces: {a: {command: [w], allow: *a}}",
		"interfaces: {a: {command: [w], allow: {<<: {uids: [1e3]}}}}",
	} {
		f.Add(s, "TASKD_ADMIN_UIDS=1,2\nTASKD_INTERFACES_A_ALLOW_TLS_NAMES=[\"x\"]")
	}
	f.Fuzz(func(t *testing.T, doc, env string) {
		cfg, err := parse([]byte(doc), strings.Split(env, "\n"))
		if err == nil {
			require.NoError(t, cfg.Validate())
		}
	})
}
