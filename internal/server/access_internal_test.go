package server

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/config"
)

// TestAllows: a rule names a unix peer by uid, gid, or a group its user has in the user
// database (looked up, not trusted from the peer), and a TLS peer by a certificate name;
// a TCP peer without a certificate only passes a nil rule.
func TestAllows(t *testing.T) {
	g := newGuard()
	g.users = newUserCache(func(uid int) userInfo {
		if uid == 1000 {
			return userInfo{name: "alice", gids: []int{1000, 27}}
		}
		return userInfo{}
	})
	r, problems := compileRule(&config.Access{UIDs: []int{33}, GIDs: []int{27, 50}, TLSNames: []string{"spiffe://x/app"}})
	require.Empty(t, problems)
	unix := func(uid, gid int) Peer { return Peer{Unix: true, PID: 1, UID: uid, GID: gid} }
	for _, tc := range []struct {
		p    Peer
		want bool
	}{
		{unix(33, 33), true},     // uid
		{unix(7, 50), true},      // primary gid, from the kernel
		{unix(1000, 1000), true}, // supplementary group 27 of alice
		{unix(1001, 1001), false},
		{Peer{Unix: true, UID: -1, GID: -1}, false}, // credentials unknown
		{Peer{UID: -1, GID: -1, Addr: "127.0.0.1:5", TLSNames: []string{"dns.example", "spiffe://x/app"}}, true},
		{Peer{UID: -1, GID: -1, Addr: "127.0.0.1:5", TLSNames: []string{"spiffe://x/other"}}, false},
		{Peer{UID: -1, GID: -1, Addr: "127.0.0.1:5"}, false},
	} {
		assert.Equal(t, tc.want, g.allows(r, tc.p), "%+v", tc.p)
		assert.True(t, g.allows(nil, tc.p), "nil: anyone")
	}
	empty, _ := compileRule(&config.Access{})
	assert.False(t, g.allows(empty, unix(0, 0)), "an empty rule: nobody, root included")
	assert.Equal(t, "uid 1000 (alice), gid 1000, pid 1", g.describe(unix(1000, 1000)))
	assert.Equal(t, "tcp 127.0.0.1:5 (no verified client certificate)", g.describe(Peer{UID: -1, Addr: "127.0.0.1:5"}))
	assert.Equal(t, "tcp:127.0.0.1", identity(Peer{UID: -1, Addr: "127.0.0.1:5"}), "one identity whatever the port")

	_, problems = compileRule(&config.Access{Users: []string{"no-such-user-here"}, Groups: []string{"no-such-group-here"}})
	assert.Len(t, problems, 2, "names that do not resolve are reported (and match nobody)")
}

// TestUserCache: a uid is looked up once per userCacheTTL, and the cache forgets old
// entries, then everything, rather than grow past userCacheMax.
func TestUserCache(t *testing.T) {
	var lookups atomic.Int64
	c := newUserCache(func(uid int) userInfo {
		lookups.Add(1)
		return userInfo{name: fmt.Sprint("u", uid)}
	})
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	assert.Equal(t, "u5", c.get(5).name)
	assert.Equal(t, "u5", c.get(5).name)
	assert.EqualValues(t, 1, lookups.Load(), "cached")
	now = now.Add(userCacheTTL)
	c.get(5)
	assert.EqualValues(t, 2, lookups.Load(), "looked up again after the TTL")
	for uid := range 3 * userCacheMax {
		c.get(uid)
		c.mu.Lock()
		n := len(c.m)
		c.mu.Unlock()
		require.LessOrEqual(t, n, userCacheMax)
	}
}

func TestBoundedSet(t *testing.T) {
	b := boundedSet{max: 3}
	assert.True(t, b.add("a"))
	assert.False(t, b.add("a"))
	b.add("b")
	b.add("c")
	assert.True(t, b.add("d"), "full: forgets, and starts again")
	assert.True(t, b.add("a"))
	assert.LessOrEqual(t, len(b.m), 3)
}

// TestLookupUser: the real user database gives root's name and groups; a uid it does
// not have gives nothing.
func TestLookupUser(t *testing.T) {
	u := lookupUser(0)
	assert.Equal(t, "root", u.name)
	assert.Contains(t, u.gids, 0)
	assert.Equal(t, userInfo{}, lookupUser(2147480000))
}

// BenchmarkAllows is the cost of an allow check, which every checkout request pays
// (calls pay nothing): no rule; a rule that names the uid; and a rule that names only a
// supplementary group, found in the user cache.
func BenchmarkAllows(b *testing.B) {
	g := newGuard()
	g.users = newUserCache(func(uid int) userInfo { return userInfo{name: "alice", gids: []int{1000, 27}} })
	p := Peer{Unix: true, PID: 1, UID: 1000, GID: 1000}
	byUID, _ := compileRule(&config.Access{UIDs: []int{1000}})
	byGroup, _ := compileRule(&config.Access{GIDs: []int{27}})
	for name, r := range map[string]*rule{"none": nil, "uid": byUID, "supplementary": byGroup} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !g.allows(r, p) {
					b.Fatal("refused")
				}
			}
		})
	}
}
