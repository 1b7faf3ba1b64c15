package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/pkg/client"
)

// TestRenderStatusAccess: `taskctl status` shows each interface's allow rule once any
// interface has one (anyone, nobody, or the lists), and `-o json` carries it as "allow".
func TestRenderStatusAccess(t *testing.T) {
	st := client.DaemonStatus{Version: "1", Interfaces: []client.InterfaceStatus{
		{Name: "closed", Allow: &client.Access{}},
		{Name: "open"},
		{Name: "passwd", Allow: &client.Access{Users: []string{"www-data", "app"}, Groups: []string{"web"}, UIDs: []int{33},
			TLSNames: []string{"spiffe://example.org/app"}}},
	}}
	var buf bytes.Buffer
	require.NoError(t, renderStatus(&buf, st))
	assert.Contains(t, buf.String(), `
INTERFACE  ALLOW
closed     nobody
open       anyone
passwd     users www-data, app; groups web; uids 33; tls_names spiffe://example.org/app
`)
	b, err := json.Marshal(st)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"name":"closed","live":0`)
	assert.Contains(t, string(b), `"allow":{"users":["www-data","app"],"groups":["web"],"uids":[33],"tls_names":["spiffe://example.org/app"]}`)
	assert.Contains(t, string(b), `"allow":{}`, "nobody is an empty rule, not an absent one")

	buf.Reset()
	require.NoError(t, renderStatus(&buf, client.DaemonStatus{Version: "1", Interfaces: []client.InterfaceStatus{{Name: "open"}}}))
	assert.NotContains(t, buf.String(), "ALLOW", "no rule anywhere: nothing to show")
}
