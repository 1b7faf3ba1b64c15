package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// HelperArg0 is the argv[0] that makes taskd's executable act as the helper (see Main).
const HelperArg0 = "taskd-sandbox-helper"

// selfExe is the running executable. Through /proc it names the very file that was
// started, even one replaced or removed since (a package upgrade under a running taskd).
const selfExe = "/proc/self/exe"

// resources maps the rlimit names of the config (interfaces.NAME.rlimits) to Linux's
// resources.
var resources = map[string]int{
	"nofile": unix.RLIMIT_NOFILE,
	"nproc":  unix.RLIMIT_NPROC,
	"as":     unix.RLIMIT_AS,
	"cpu":    unix.RLIMIT_CPU,
	"core":   unix.RLIMIT_CORE,
	"fsize":  unix.RLIMIT_FSIZE,
}

// Rlimit is one resource limit, set as both the soft and the hard limit: a worker can
// lower it but never raise it.
type Rlimit struct {
	Resource string // nofile, nproc, as, cpu, core or fsize
	Value    uint64 // in the resource's unit: bytes, seconds (cpu), or a count
}

// Spec is what the helper applies before it executes the worker. The zero value applies
// nothing but no_new_privs. A Spec is a plain value; it is read, never modified.
type Spec struct {
	Umask   *uint32  // nil: the worker inherits taskd's umask
	Rlimits []Rlimit // the others are inherited from taskd
}

// Empty reports whether s sets nothing, so that a worker needs no helper.
func (s Spec) Empty() bool { return s.Umask == nil && len(s.Rlimits) == 0 }

// Wrap makes cmd, made by exec.Command and not started, run through the helper: its Path
// becomes this executable and its Args the helper's marker, s, and the worker's path and
// argv. Everything else of cmd (Dir, Env, files, SysProcAttr) applies to the helper and so
// to the worker. Main must run first thing in this executable's main. If cmd.Err is set
// (its program was not found), Wrap leaves cmd alone, for Start to report.
func Wrap(cmd *exec.Cmd, s Spec) error {
	if cmd.Err != nil {
		return nil
	}
	args, err := s.args()
	if err != nil {
		return err
	}
	args = append(args, "--", cmd.Path)
	cmd.Args = append(args, cmd.Args...)
	cmd.Path = selfExe
	return nil
}

// args encodes s as the helper's arguments: HelperArg0, then -umask OCTAL and -rlimit
// NAME=VALUE pairs.
func (s Spec) args() ([]string, error) {
	args := []string{HelperArg0}
	if s.Umask != nil {
		if *s.Umask > 0o777 {
			return nil, fmt.Errorf("sandbox: umask %#o has bits beyond 0777", *s.Umask)
		}
		args = append(args, "-umask", "0"+strconv.FormatUint(uint64(*s.Umask), 8))
	}
	for _, l := range s.Rlimits {
		if _, ok := resources[l.Resource]; !ok {
			return nil, fmt.Errorf("sandbox: no rlimit %q (known: %s)", l.Resource, strings.Join(resourceNames(), ", "))
		}
		args = append(args, "-rlimit", l.Resource+"="+strconv.FormatUint(l.Value, 10))
	}
	return args, nil
}

// helperArgs is a decoded helper command line: what to apply, and the worker to execute.
type helperArgs struct {
	spec Spec
	path string   // the worker's program, as os/exec resolved it
	argv []string // the worker's argv
}

// parseArgs decodes the command line that Wrap made (args[0] is HelperArg0).
func parseArgs(args []string) (helperArgs, error) {
	var h helperArgs
	if len(args) == 0 || args[0] != HelperArg0 {
		return h, errors.New("not a helper command line")
	}
	rest := args[1:]
	for len(rest) > 0 && rest[0] != "--" {
		if len(rest) < 2 {
			return h, fmt.Errorf("%s without a value", rest[0])
		}
		flag, val := rest[0], rest[1]
		rest = rest[2:]
		switch flag {
		case "-umask":
			m, err := strconv.ParseUint(val, 8, 32)
			if err != nil || m > 0o777 {
				return h, fmt.Errorf("umask %q is not an octal mode up to 0777", val)
			}
			u := uint32(m)
			h.spec.Umask = &u
		case "-rlimit":
			name, num, _ := strings.Cut(val, "=")
			if _, ok := resources[name]; !ok {
				return h, fmt.Errorf("no rlimit %q", name)
			}
			v, err := strconv.ParseUint(num, 10, 64)
			if err != nil {
				return h, fmt.Errorf("rlimit %s: %q is not a whole number", name, num)
			}
			h.spec.Rlimits = append(h.spec.Rlimits, Rlimit{Resource: name, Value: v})
		default:
			return h, fmt.Errorf("unknown argument %q", flag)
		}
	}
	if len(rest) < 3 || rest[1] == "" {
		return h, errors.New("no worker program after --")
	}
	h.path, h.argv = rest[1], rest[2:]
	return h, nil
}

// Main runs this process as the helper if it was started as one (argv[0] is HelperArg0):
// it applies the Spec that Wrap encoded and executes the worker, and never returns. If
// it cannot, it writes why to stderr (the worker's stderr, which taskd logs and quotes
// in the start error) and exits with status 126, or 127 if the program was not found, as
// a shell does. Otherwise it returns at once. Call it first thing in main.
func Main() {
	if len(os.Args) == 0 || os.Args[0] != HelperArg0 {
		return
	}
	err := run(os.Args)
	fmt.Fprintf(os.Stderr, "taskd: starting the worker: %v\n", err)
	if errors.Is(err, syscall.ENOENT) {
		os.Exit(127)
	}
	os.Exit(126)
}

// run applies the helper's arguments and executes the worker; it returns only on failure.
func run(args []string) error {
	h, err := parseArgs(args)
	if err != nil {
		return fmt.Errorf("bad helper arguments: %w", err)
	}
	// no_new_privs is per thread, and execve must come from the thread that has it.
	runtime.LockOSThread()
	if h.spec.Umask != nil {
		syscall.Umask(int(*h.spec.Umask))
	}
	for _, l := range h.spec.Rlimits {
		// syscall.Setrlimit, not a raw call: for RLIMIT_NOFILE it also stops the runtime
		// from putting its original soft limit back at exec.
		if err := syscall.Setrlimit(resources[l.Resource], &syscall.Rlimit{Cur: l.Value, Max: l.Value}); err != nil {
			return fmt.Errorf("setting rlimit %s to %d: %w (a worker's limit can only be raised above taskd's hard limit by root)", l.Resource, l.Value, err)
		}
	}
	if err := setNoNewPrivs(); err != nil {
		return err
	}
	err = syscall.Exec(h.path, h.argv, os.Environ())
	return fmt.Errorf("exec %s: %w", h.path, err)
}

// RestrictSelf makes sure this process has no_new_privs, and so every worker it starts:
// if it does not, it sets the flag on the main thread and re-executes itself (same pid,
// argv and environment), so that every thread has it from the start. It returns nil
// without doing anything if the flag is set already (by systemd's NoNewPrivileges=yes,
// or by the re-execution). Call it first thing in main, after Main, before anything
// depends on the process's state: nothing done before it survives the re-execution.
func RestrictSelf() error {
	on, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("reading no_new_privs: %w", err)
	}
	if on == 1 {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := setNoNewPrivs(); err != nil {
		return err
	}
	err = syscall.Exec(selfExe, os.Args, os.Environ())
	return fmt.Errorf("re-executing %s with no_new_privs set: %w", selfExe, err)
}

// setNoNewPrivs sets PR_SET_NO_NEW_PRIVS on the calling thread, which must be locked.
func setNoNewPrivs() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("setting no_new_privs: %w", err)
	}
	return nil
}

func resourceNames() []string {
	names := make([]string, 0, len(resources))
	for n := range resources {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
