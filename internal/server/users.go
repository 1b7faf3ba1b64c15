package server

import (
	"os/user"
	"strconv"
	"sync"
	"time"
)

// userCache keeps, per uid, the user's name and the groups the user database gives it
// (its primary group and its supplementary groups), for userCacheTTL and for at most
// userCacheMax uids. Looking them up reads /etc/passwd and /etc/group (or asks NSS),
// which is too slow for every checkout request. Safe for concurrent use; the lookup runs
// without the lock held.
type userCache struct {
	lookup func(uid int) userInfo
	now    func() time.Time

	mu sync.Mutex
	m  map[int]userInfo
}

// userInfo is what the user database says of a uid; zero if it has no entry.
type userInfo struct {
	name string
	gids []int
	at   time.Time // when it was looked up
}

func newUserCache(lookup func(uid int) userInfo) *userCache {
	return &userCache{lookup: lookup, now: time.Now, m: make(map[int]userInfo)}
}

// get returns what the user database says of uid, looked up at most userCacheTTL ago.
func (c *userCache) get(uid int) userInfo {
	now := c.now()
	c.mu.Lock()
	u, ok := c.m[uid]
	c.mu.Unlock()
	if ok && now.Sub(u.at) < userCacheTTL {
		return u
	}
	u = c.lookup(uid)
	u.at = now
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= userCacheMax {
		for k, v := range c.m {
			if now.Sub(v.at) >= userCacheTTL {
				delete(c.m, k)
			}
		}
		if len(c.m) >= userCacheMax {
			clear(c.m)
		}
	}
	c.m[uid] = u
	return u
}

// lookupUser asks the system's user database for uid's name and groups. A uid without an
// entry has none: only its own uid and gid (from the kernel) can match a rule.
func lookupUser(uid int) userInfo {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return userInfo{}
	}
	info := userInfo{name: u.Username}
	ids, _ := u.GroupIds()
	for _, s := range ids {
		if gid, err := strconv.Atoi(s); err == nil {
			info.gids = append(info.gids, gid)
		}
	}
	return info
}
