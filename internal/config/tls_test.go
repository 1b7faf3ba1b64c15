package config

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

// TestValidateTLS: a tls:// listener needs tls.cert_file and tls.key_file, the files
// must load (key matching the certificate, CA file holding a certificate, not expired),
// and each problem names its key and says what to do.
func TestValidateTLS(t *testing.T) {
	ca := taskdtest.NewCA(t, "test")
	cert, key := ca.Issue(t, taskdtest.ServerLeaf("server"))
	_, otherKey := ca.Issue(t, taskdtest.ServerLeaf("other"))
	expCert, expKey := ca.Issue(t, taskdtest.Leaf{Name: "expired", SANs: []string{"localhost"}, Expired: true})
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not a PEM file\n"), 0o600))
	missing := filepath.Join(t.TempDir(), "missing.pem")

	withTLS := func(f func(*TLS)) func(*Config) {
		return func(c *Config) {
			c.Listen = []string{"unix:/tmp/a.sock", "tls://0.0.0.0:7443"}
			c.TLS = TLS{CertFile: cert, KeyFile: key, ClientCAFile: ca.CertFile, MinVersion: "1.2"}
			f(&c.TLS)
		}
	}
	tests := []struct {
		name   string
		modify func(c *Config)
		want   []string
	}{
		{"mTLS on any address", withTLS(func(*TLS) {}), nil},
		{"TLS without client certificates, 1.3 only", withTLS(func(t *TLS) { t.ClientCAFile, t.MinVersion = "", "1.3" }), nil},
		{"tls:// without a certificate", func(c *Config) { c.Listen = []string{"tls://0.0.0.0:7443"} }, []string{
			"tls: listen has a tls:// address, which needs taskd's certificate: set tls.cert_file and tls.key_file"}},
		{"tcp:// and tls:// on one port", func(c *Config) {
			withTLS(func(*TLS) {})(c)
			c.Listen = []string{"tcp://127.0.0.1:7443", "tls://127.0.0.1:7443"}
		}, []string{"listen[1]: tls://127.0.0.1:7443 is already listen[0]"}},
		{"key without certificate", withTLS(func(t *TLS) { t.CertFile = "" }), []string{
			"tls.cert_file: not set, but tls.key_file is"}},
		{"certificate without key", withTLS(func(t *TLS) { t.KeyFile = "" }), []string{
			"tls.key_file: not set, but tls.cert_file is"}},
		{"client CA without certificate", func(c *Config) { c.TLS = TLS{ClientCAFile: ca.CertFile, MinVersion: "1.2"} }, []string{
			"tls.client_ca_file: set without tls.cert_file and tls.key_file"}},
		{"bad min_version", withTLS(func(t *TLS) { t.MinVersion = "1.1" }), []string{
			`tls.min_version: "1.1" is not one of "1.2", "1.3"`}},
		{"missing files", withTLS(func(t *TLS) { t.CertFile, t.KeyFile, t.ClientCAFile = missing, missing, missing }), []string{
			"tls.cert_file: open " + missing + ": no such file or directory: give the PEM file of taskd's certificate",
			"tls.key_file: open " + missing + ": no such file or directory: give the PEM file of the certificate's private key",
			"tls.client_ca_file: open " + missing + ": no such file or directory: give the PEM file of the CA certificates"}},
		{"key of another certificate", withTLS(func(t *TLS) { t.KeyFile = otherKey }), []string{
			"tls.key_file: tls: private key does not match public key: " + otherKey + " is not the private key of the certificate in " + cert}},
		{"not PEM", withTLS(func(t *TLS) { t.CertFile = garbage }), []string{
			"tls.cert_file: " + garbage + " and " + key + " do not make a certificate and key"}},
		{"CA file without a certificate", withTLS(func(t *TLS) { t.ClientCAFile = garbage }), []string{
			"tls.client_ca_file: " + garbage + " holds no PEM certificate"}},
		{"expired", withTLS(func(t *TLS) { t.CertFile, t.KeyFile = expCert, expKey }), []string{
			"tls.cert_file: the certificate in " + expCert + " expired at"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.modify(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			problems := strings.Split(err.Error(), "\n")
			require.Len(t, problems, len(tt.want), "problems:\n%s", err)
			for i, w := range tt.want {
				assert.Contains(t, problems[i], w)
			}
		})
	}
}

// TestLoadTLS: the tls keys from the file, with their lines in problems; TLS.Load gives
// what the daemon serves.
func TestLoadTLS(t *testing.T) {
	ca := taskdtest.NewCA(t, "test")
	cert, key := ca.Issue(t, taskdtest.ServerLeaf("server"))
	yaml := fmt.Sprintf(`
listen: ["tls://0.0.0.0:7443"]
tls:
  cert_file: %q
  key_file: %q
  client_ca_file: %q
  min_version: 1.3
interfaces:
  x: {command: [w]}
`, cert, key, ca.CertFile)
	c, err := parse([]byte(yaml), nil)
	require.NoError(t, err)
	assert.Equal(t, TLS{CertFile: cert, KeyFile: key, ClientCAFile: ca.CertFile, MinVersion: "1.3"}, c.TLS)
	f, err := c.TLS.Load()
	require.NoError(t, err)
	assert.Equal(t, uint16(tls.VersionTLS13), f.MinVersion)
	assert.Equal(t, "server", f.Cert.Leaf.Subject.CommonName)
	assert.NotNil(t, f.ClientCAs)

	_, err = parse([]byte(strings.Replace(yaml, "min_version: 1.3", "min_version: 1.0", 1)), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `line 7: tls.min_version: "1.0" is not one of`)
	_, err = parse([]byte(yaml), []string{"TASKD_TLS_KEY_FILE=/nonexistent/key.pem"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "tls.key_file (from TASKD_TLS_KEY_FILE): open /nonexistent/key.pem: no such file")

	// A reload of a changed tls key is live: no restart needed.
	for _, k := range []string{"tls.cert_file", "tls.key_file", "tls.client_ca_file", "tls.min_version"} {
		assert.Equal(t, ReloadLive, DaemonKeyReload(k), k)
	}
}
