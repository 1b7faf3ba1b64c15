// Package cgroup puts each worker process in a cgroup v2 of its own, when taskd has been
// delegated a cgroup (systemd's Delegate=yes), so that limits apply to a worker and all
// it starts, and so that a retired worker's whole process tree can be killed, grandchildren
// that left its process group or session included.
//
// Detect finds taskd's own cgroup (/proc/self/cgroup, and the cgroup2 mount in
// /proc/self/mountinfo: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts) and
// says whether it is delegated to taskd; if not, it says why, and taskd runs without
// cgroups. Setup then lays out the tree under taskd's cgroup:
//
//	<own>/supervisor/              taskd itself (the no-internal-processes rule)
//	<own>/workers/<interface>/     cpu.weight: the interface's share against the others
//	<own>/workers/<interface>/<id> one worker: memory.max, pids.max; killed whole when it ends
//
// Worker cgroups are made by Interface.NewWorker; the worker is spawned straight into
// its cgroup (CLONE_INTO_CGROUP, with the directory descriptor Worker.FD), and
// Worker.Release kills everything left in it (cgroup.kill, or SIGKILL to each process on
// kernels before 5.14) and removes it. Setup kills and removes the worker cgroups a
// previous taskd left behind; Close removes everything under workers/.
//
// It does not set up the delegation (that is systemd's, or the test's), and it knows
// nothing of pools or the worker protocol. Every method is safe for concurrent use.
package cgroup
