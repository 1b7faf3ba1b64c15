package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// Tests of who may call what (allow, admin, hide_forbidden) with real clients running as
// another user: the test binary runs itself as nobody (TestAccessHelperProcess), over a
// socket that nobody can reach.

const (
	accessHelperEnv = "TASKD_TEST_ACCESS_HELPER" // the helper's operation; set only in the helper
	accessResultTag = "ACCESS-RESULT "
	nobodyUID       = 65534
)

// accessResult is what the helper reports of its operation.
type accessResult struct {
	Err          string            `json:"err,omitempty"`
	Forbidden    bool              `json:"forbidden,omitempty"`
	NotPermitted bool              `json:"not_permitted,omitempty"`
	Unknown      bool              `json:"unknown,omitempty"`
	UID          int               `json:"uid"`
	Allow        map[string]string `json:"allow,omitempty"` // status: each interface's rule, as Access.String says
}

// TestAccessHelperProcess is not a test: it is the client that the access tests run as
// another user. It does one operation (TASKD_TEST_ACCESS_HELPER) against the daemon at
// TASKD_TEST_ADDR on interface TASKD_TEST_IFACE, prints what came of it, and exits.
func TestAccessHelperProcess(t *testing.T) {
	op := os.Getenv(accessHelperEnv)
	if op == "" {
		t.Skip("the client that the access tests run as another user; it runs only when they start it")
	}
	res := accessOp(op, os.Getenv("TASKD_TEST_ADDR"), os.Getenv("TASKD_TEST_IFACE"))
	b, _ := json.Marshal(res)
	fmt.Printf("\n%s%s\n", accessResultTag, b)
	os.Exit(0)
}

func accessOp(op, addr, iface string) accessResult {
	res := accessResult{UID: os.Getuid()}
	c, err := client.New(client.Config{Addr: addr, Interface: iface, Timeout: 10 * time.Second, Name: "access-helper"})
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	switch op {
	case "use": // a one-shot call, then a held checkout
		var got []string
		if err = c.Call(ctx, "echo", &got, "one-shot"); err == nil {
			var co *client.Checkout
			if co, err = c.Checkout(ctx); err == nil {
				err = co.Call(ctx, "echo", &got, "held")
				co.Release()
			}
		}
	case "drain":
		if _, err = c.Drain(ctx, iface); err == nil {
			_, err = c.Resume(ctx, iface)
		}
	case "logs":
		_, err = c.Logs(ctx, iface)
	case "status":
		var st client.DaemonStatus
		if st, err = c.DaemonStatus(ctx); err == nil {
			res.Allow = map[string]string{}
			for _, is := range st.Interfaces {
				res.Allow[is.Name] = is.Allow.String()
			}
		}
	default:
		err = fmt.Errorf("unknown helper operation %q", op)
	}
	if err != nil {
		res.Err = err.Error()
		res.Forbidden = errors.Is(err, client.ErrForbidden)
		res.NotPermitted = errors.Is(err, client.ErrNotPermitted)
		res.Unknown = errors.Is(err, client.ErrUnknownInterface)
	}
	return res
}

// accessEnv is a directory that other users can reach, holding a copy of the test
// binary that they can run and the daemons' directories; removed when the test ends.
type accessEnv struct {
	dir, bin string
}

// newAccessEnv skips the test unless it runs as root (needed to run a client as another
// user) and user nobody exists.
func newAccessEnv(t *testing.T) *accessEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs clients as user nobody (uid 65534); run the tests as root (CI does) to cover access control")
	}
	if u, err := user.LookupId(strconv.Itoa(nobodyUID)); err != nil || u.Username != "nobody" {
		t.Skipf("needs user nobody with uid %d (%v)", nobodyUID, err)
	}
	dir, err := os.MkdirTemp("", "taskd-acl-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	self, err := os.Executable()
	require.NoError(t, err)
	bin := filepath.Join(dir, "client.test") // the go test build directory is root's alone
	src, err := os.Open(self)
	require.NoError(t, err)
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
	return &accessEnv{dir: dir, bin: bin}
}

// start runs taskd with yaml and a socket that anyone may connect to.
func (e *accessEnv) start(t *testing.T, yaml string) *taskdtest.Daemon {
	t.Helper()
	dir, err := os.MkdirTemp(e.dir, "d")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	return taskdtest.StartWith(t, "socket_mode: \"0666\"\n"+yaml, taskdtest.Options{Dir: dir, Wait: true})
}

// as runs the helper's operation op on iface as cred (nil: nobody) and returns its result.
func (e *accessEnv) as(t *testing.T, cred *syscall.Credential, d *taskdtest.Daemon, op, iface string) accessResult {
	t.Helper()
	if cred == nil {
		cred = &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID, Groups: []uint32{}}
	}
	cmd := exec.Command(e.bin, "-test.run=^TestAccessHelperProcess$", "-test.count=1")
	cmd.Dir = e.dir
	cmd.Env = []string{accessHelperEnv + "=" + op, "TASKD_TEST_ADDR=" + d.Addr, "TASKD_TEST_IFACE=" + iface,
		"GORACE=atexit_sleep_ms=0", "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the helper as uid %d: %s", cred.Uid, out)
	for _, line := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(line, accessResultTag); ok {
			var res accessResult
			require.NoError(t, json.Unmarshal([]byte(s), &res))
			require.EqualValues(t, cred.Uid, res.UID, "the helper ran as another user")
			return res
		}
	}
	t.Fatalf("the helper printed no result:\n%s", out)
	return accessResult{}
}

func echoIface(name, extra string) string {
	return taskdtest.WorkerYAML(name, "raw", "min_idle: 0\n"+extra)
}

// TestAccessControlAsAnotherUser: checkouts (one-shot and held) by nobody are allowed by
// its user name, uid, primary group or gid, and refused with ErrForbidden naming the
// interface and the uid where the allow list does not name it; each refusal is logged
// once per peer and interface; status shows every rule; logs follow allow; admin requests
// are refused to nobody until admin names it; hide_forbidden hides what nobody may not
// use; and each change applies by a reload, to connections already open too.
func TestAccessControlAsAnotherUser(t *testing.T) {
	e := newAccessEnv(t)
	base := "interfaces:\n" + echoIface("open", "") +
		echoIface("byuser", "allow: {users: [nobody]}") +
		echoIface("byuid", "allow: {uids: [65534]}") +
		echoIface("bygroup", "allow: {groups: [nogroup]}") +
		echoIface("bygid", "allow: {gids: [65534]}") +
		echoIface("rootonly", "allow: {users: [root]}") +
		echoIface("closed", "allow: {}")
	if _, err := user.LookupGroup("nogroup"); err != nil {
		t.Skip("needs group nogroup (nobody's primary group)")
	}
	d := e.start(t, base+echoIface("later", "allow: {users: [root]}"))
	root := func(iface string) *client.Client { return newClient(t, d, iface) }

	for _, iface := range []string{"open", "byuser", "byuid", "bygroup", "bygid"} {
		res := e.as(t, nil, d, "use", iface)
		assert.Empty(t, res.Err, "nobody may use %s", iface)
	}
	for _, iface := range []string{"rootonly", "closed", "rootonly"} {
		res := e.as(t, nil, d, "use", iface)
		assert.True(t, res.Forbidden, "%s: %s", iface, res.Err)
		assert.Contains(t, res.Err, fmt.Sprintf("checkout of %q", iface))
		assert.Contains(t, res.Err, fmt.Sprintf(`interface \"%s\" may not be used`, iface), "taskd names the interface")
		assert.Contains(t, res.Err, "uid 65534 (nobody)")
		assert.Contains(t, res.Err, "forbidden")
	}
	assert.Equal(t, 1, strings.Count(d.Logs(), `"interface":"rootonly","who":"uid 65534 (nobody)`),
		"a refusal is logged once per peer and interface")
	require.NoError(t, root("rootonly").Call(ctxT(t), "echo", nil, "x"), "root is in rootonly's list")
	err := root("byuser").Call(ctxT(t), "echo", nil, "x")
	require.ErrorIs(t, err, client.ErrForbidden, "root is not implicitly allowed")
	assert.Contains(t, err.Error(), "uid 0 (root)")

	st := e.as(t, nil, d, "status", "open")
	require.Empty(t, st.Err)
	assert.Equal(t, map[string]string{"open": "anyone", "byuser": "users nobody", "byuid": "uids 65534", "bygroup": "groups nogroup",
		"bygid": "gids 65534", "rootonly": "users root", "closed": "nobody", "later": "users root"}, st.Allow,
		"names are not secrets: nobody sees every interface and its rule")
	assert.True(t, e.as(t, nil, d, "logs", "rootonly").Forbidden, "the workers' logs are not for peers that may not use them")
	assert.Empty(t, e.as(t, nil, d, "logs", "byuser").Err)

	res := e.as(t, nil, d, "drain", "open")
	assert.True(t, res.NotPermitted, res.Err)
	assert.Contains(t, res.Err, "uid 65534 (nobody)")
	_, err = root("open").Drain(ctxT(t), "open")
	require.NoError(t, err, "root is an admin")
	_, err = root("open").Resume(ctxT(t), "open")
	require.NoError(t, err)

	// A connection open across the reload: the new rule applies to its next checkout.
	held := root("later")
	require.NoError(t, held.Call(ctxT(t), "echo", nil, "before"))
	rewrite(t, d, "socket_mode: \"0666\"\nhide_forbidden: true\n"+base+echoIface("later", "allow: {users: [nobody]}"))
	_, err = root("open").Reload(ctxT(t))
	require.NoError(t, err)
	require.ErrorIs(t, held.Call(ctxT(t), "echo", nil, "after"), client.ErrForbidden, "root left later's list")
	assert.Empty(t, e.as(t, nil, d, "use", "later").Err, "nobody joined it")
	st = e.as(t, nil, d, "status", "open")
	require.Empty(t, st.Err)
	assert.Equal(t, map[string]string{"open": "anyone", "byuser": "users nobody", "byuid": "uids 65534", "bygroup": "groups nogroup",
		"bygid": "gids 65534", "later": "users nobody"}, st.Allow, "hide_forbidden: only what nobody may use")
	res = e.as(t, nil, d, "use", "rootonly")
	assert.True(t, res.Unknown, "hidden: refused as if it did not exist: %s", res.Err)
	assert.False(t, res.Forbidden)
	assert.NotContains(t, res.Err, "closed", "the names listed are those nobody sees")
	assert.True(t, e.as(t, nil, d, "logs", "rootonly").Unknown)
	full, err := root("open").DaemonStatus(ctxT(t))
	require.NoError(t, err)
	assert.Len(t, full.Interfaces, 8, "an admin sees everything")

	rewrite(t, d, "socket_mode: \"0666\"\nhide_forbidden: true\nadmin: {users: [nobody]}\n"+base+echoIface("later", "allow: {users: [nobody]}"))
	_, err = root("open").Reload(ctxT(t))
	require.NoError(t, err)
	res = e.as(t, nil, d, "drain", "open")
	assert.Empty(t, res.Err, "admin names nobody")
	st = e.as(t, nil, d, "status", "open")
	assert.Len(t, st.Allow, 8, "an admin sees every interface, hide_forbidden or not")
	assert.True(t, e.as(t, nil, d, "use", "rootonly").Forbidden, "an admin may steer, not use, what allow does not grant")
}

// TestAccessBySupplementaryGroup: a user is allowed by a group that the user database
// gives it as a supplementary group (its primary group is another). It uses a membership
// that the system has (as ssl-cert's postgres): it creates none.
func TestAccessBySupplementaryGroup(t *testing.T) {
	e := newAccessEnv(t)
	group, u := supplementaryMember(t)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	d := e.start(t, "interfaces:\n"+echoIface("supp", fmt.Sprintf("allow: {groups: [%s]}", group))+
		echoIface("other", "allow: {groups: [nogroup]}"))
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}} // the process itself has no supplementary group
	assert.Empty(t, e.as(t, cred, d, "use", "supp").Err, "%s is in group %s", u.Username, group)
	res := e.as(t, cred, d, "use", "other")
	assert.True(t, res.Forbidden, res.Err)
	assert.Contains(t, res.Err, fmt.Sprintf("uid %d (%s)", uid, u.Username))
}

// supplementaryMember finds a user (not root) that /etc/group lists as a member of a group
// other than its primary one, or skips the test.
func supplementaryMember(t *testing.T) (string, *user.User) {
	f, err := os.Open("/etc/group")
	if err != nil {
		t.Skipf("no /etc/group: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 4 || fields[3] == "" {
			continue
		}
		for _, name := range strings.Split(fields[3], ",") {
			u, err := user.Lookup(name)
			if err == nil && u.Uid != "0" && u.Gid != fields[2] {
				return fields[0], u
			}
		}
	}
	t.Skip("no user in /etc/group is a member of a group other than its primary one; " +
		"this test creates no user or group, so it needs one (e.g. postgres in ssl-cert)")
	return "", nil
}
