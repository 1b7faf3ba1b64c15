package cgroup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	v1Only = `22 1 0:21 / /sys rw - sysfs sysfs rw
30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
`
	hybrid = v1Only + `40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
)

func TestParseMountinfo(t *testing.T) {
	for _, tc := range []struct {
		name, in    string
		mount, root string
		ok          bool
	}{
		{"v1 only", v1Only, "", "", false},
		{"hybrid", hybrid, "/sys/fs/cgroup/unified", "/", true},
		{"unified", "25 22 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n", "/sys/fs/cgroup", "/", true},
		{"optional fields", "25 22 0:22 / /sys/fs/cgroup rw shared:9 master:2 - cgroup2 none rw\n", "/sys/fs/cgroup", "/", true},
		{"bind of a subtree", "25 22 0:22 /a/b /mnt/cg rw - cgroup2 cgroup2 rw\n", "/mnt/cg", "/a/b", true},
		{"escaped", `25 22 0:22 / /mnt/c\040g rw - cgroup2 cgroup2 rw` + "\n", "/mnt/c g", "/", true},
		{"bad escape", `25 22 0:22 / /mnt/c\04 rw - cgroup2 cgroup2 rw` + "\n", "", "", false},
		{"short", "25 22 - cgroup2 cgroup2 rw\n", "", "", false},
		{"empty", "", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mount, root, ok := ParseMountinfo([]byte(tc.in))
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.mount, mount)
			assert.Equal(t, tc.root, root)
		})
	}
}

func TestParseSelfCgroup(t *testing.T) {
	p, ok := ParseSelfCgroup([]byte("9:name=systemd:/\n4:memory:/x\n0::/system.slice/taskd.service\n"))
	assert.True(t, ok)
	assert.Equal(t, "/system.slice/taskd.service", p)
	_, ok = ParseSelfCgroup([]byte("4:memory:/x\n1:cpu:/\n"))
	assert.False(t, ok, "cgroup v1 only")
}

// fakeCgroup makes a directory that looks like a cgroup to detect (it only reads and
// checks files), under a fake mount.
func fakeCgroup(t *testing.T, mount, rel, controllers string) string {
	dir := filepath.Join(mount, rel)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for _, f := range []string{"cgroup.procs", "cgroup.subtree_control", "cgroup.type"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), nil, 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cgroup.controllers"), []byte(controllers+"\n"), 0o444))
	return dir
}

func TestDetect(t *testing.T) {
	mount := t.TempDir()
	mi := []byte("40 30 0:37 / " + mount + " rw - cgroup2 cgroup2 rw\n")
	svc := fakeCgroup(t, mount, "svc", "cpuset cpu io memory pids")
	fakeCgroup(t, mount, "system.slice/taskd.service", "memory")
	fakeCgroup(t, mount, "plain", "")
	require.NoError(t, os.WriteFile(filepath.Join(svc, "cgroup.procs"), []byte("42\n"), 0o644))
	shared := fakeCgroup(t, mount, "shared", "")
	require.NoError(t, os.WriteFile(filepath.Join(shared, "cgroup.procs"), []byte("42\n4242\n"), 0o644))
	busy := fakeCgroup(t, mount, "busy", "")
	fakeCgroup(t, busy, "supervisor", "")
	require.NoError(t, os.WriteFile(filepath.Join(busy, "supervisor", "cgroup.procs"), []byte("4343\n"), 0o644))

	for _, tc := range []struct {
		name, mountinfo, self string
		euid                  int
		dir                   string   // "" = off
		available             []string // when on
		why                   string   // when off
	}{
		{name: "cgroup v1 only", mountinfo: v1Only, self: "4:memory:/\n", why: "cgroup v1 only"},
		{name: "no v2 entry", mountinfo: string(mi), self: "4:memory:/\n", why: "no cgroup v2 entry"},
		{name: "root cgroup", mountinfo: hybrid, self: "0::/\n", why: "runs in the root cgroup"},
		{name: "delegated", mountinfo: string(mi), self: "0::/svc\n", dir: svc, available: []string{"cpu", "memory", "pids"}},
		{name: "already in supervisor", mountinfo: string(mi), self: "0::/svc/supervisor\n", dir: svc, available: []string{"cpu", "memory", "pids"}},
		{name: "no controllers", mountinfo: string(mi), self: "0::/plain\n", dir: filepath.Join(mount, "plain")},
		{name: "systemd unit, root, not marked", mountinfo: string(mi), self: "0::/system.slice/taskd.service\n", why: "did not delegate it (set Delegate=yes"},
		{name: "systemd unit, its user's", mountinfo: string(mi), self: "0::/system.slice/taskd.service\n", euid: 1000,
			dir: filepath.Join(mount, "system.slice/taskd.service"), available: []string{"memory"}},
		{name: "shared with another process", mountinfo: string(mi), self: "0::/shared\n", why: "process 4242 is in " + shared + " too"},
		{name: "another taskd in supervisor", mountinfo: string(mi), self: "0::/busy\n", why: "process 4343 is in " + filepath.Join(busy, "supervisor")},
		{name: "missing", mountinfo: string(mi), self: "0::/nonexistent\n", why: "not writable"},
		{name: "outside the mount's root", mountinfo: "40 30 0:37 /sub " + mount + " rw - cgroup2 cgroup2 rw\n", self: "0::/other\n", why: "is not under the cgroup2 mount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := detect([]byte(tc.mountinfo), []byte(tc.self), tc.euid, 42)
			if tc.dir == "" {
				require.Error(t, err)
				var off *OffError
				require.ErrorAs(t, err, &off)
				assert.Contains(t, err.Error(), tc.why)
				assert.True(t, strings.HasPrefix(err.Error(), "cgroup limits are off: "))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.dir, f.Dir)
			assert.Equal(t, tc.available, f.Available)
		})
	}
}

func TestDirName(t *testing.T) {
	assert.Equal(t, "passwd", dirName("passwd"))
	assert.Equal(t, "passwd-3", dirName("passwd-3"))
	for _, n := range []string{".", "..", "memory.max", "cgroup.procs", "a.b"} {
		assert.Equal(t, "_"+n, dirName(n))
	}
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add([]byte(hybrid))
	f.Add([]byte(`25 22 0:22 / /mnt/c\040g rw - cgroup2 cgroup2 rw`))
	f.Add([]byte(`25 22 0:22 / /mnt/c\7 rw - cgroup2 cgroup2 rw`))
	f.Fuzz(func(t *testing.T, b []byte) {
		mount, root, ok := ParseMountinfo(b)
		if ok && (!strings.HasPrefix(mount, "/") || !strings.HasPrefix(root, "/")) {
			t.Fatalf("paths not absolute: %q %q", mount, root)
		}
	})
}

func FuzzParseSelfCgroup(f *testing.F) {
	f.Add([]byte("0::/system.slice/taskd.service\n"))
	f.Add([]byte("0::/x (deleted)"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, ok := ParseSelfCgroup(b); ok && !strings.HasPrefix(p, "/") {
			t.Fatalf("not absolute: %q", p)
		}
	})
}

func FuzzParseEvents(f *testing.F) {
	f.Add([]byte("populated 1\nfrozen 0\n"))
	f.Add([]byte("populated 0\n"))
	f.Add([]byte("populated x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		populated, ok := ParseEvents(b)
		if !ok && populated {
			t.Fatal("populated without ok")
		}
	})
}

func FuzzParseProcs(f *testing.F) {
	f.Add([]byte("1\n22\n333\n"))
	f.Add([]byte("-1\nx\n0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, p := range ParseProcs(b) {
			if p <= 0 {
				t.Fatalf("pid %d", p)
			}
		}
	})
}

func TestKernelAtLeast(t *testing.T) {
	for rel, want := range map[string]bool{
		"6.18.44-fc-v1272": true, "5.7.0": true, "5.14.21-150400": true, "5.6.19": false, "4.19.0-26-amd64": false,
		"5.10": true, "junk": true, "": true, "5.x": true,
	} {
		assert.Equal(t, want, KernelAtLeast(rel, 5, 7), rel)
	}
}
