package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskd-dev/taskd/internal/wire"
	"github.com/taskd-dev/taskd/pkg/client"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed
	exitUsage = 2 // the command line is wrong
)

// options are the global flags.
type options struct {
	addr    string
	output  string // "table" or "json"
	timeout time.Duration
	tls     tlsOptions // --tls-ca, --tls-cert, --tls-key, --tls-server-name (tls.go)
	stdout  io.Writer
}

// usageError marks an error in the command line (exit code 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// run executes taskctl with args and returns the exit code. It never exits the process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts := &options{stdout: stdout}
	started := false // set once flags and arguments were accepted
	root := newRootCmd(opts, &started)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) || !started {
		fmt.Fprintf(stderr, "taskctl: %v\nRun 'taskctl --help' for usage.\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "taskctl: %v\n", err)
	var re *client.RemoteError
	if errors.As(err, &re) && re.Trace != "" {
		fmt.Fprintf(stderr, "worker trace:\n%s\n", re.Trace)
	}
	return exitError
}

func newRootCmd(opts *options, started *bool) *cobra.Command {
	root := &cobra.Command{
		Use:   "taskctl",
		Short: "Ping, inspect and reload a running taskd, and call its workers by hand",
		Long: `taskctl talks to a running taskd daemon. It checks that the daemon answers (ping),
shows its worker pools (status, top), who holds which worker (checkouts) and the workers'
stderr (logs); it calls a worker method by hand (call, bench); and, for root or taskd's own
user, it steers the daemon: re-read the config file (reload), stop and restart granting an
interface's checkouts (drain, resume), resize a pool (scale), and retire or kill a worker
(retire, kill). ready is a readiness check for orchestrators (deploy/kubernetes).
docs/operations.md shows each with sample output.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			switch opts.output {
			case "table", "json":
			default:
				return &usageError{fmt.Errorf("-o %q: want table or json", opts.output)}
			}
			if opts.timeout <= 0 {
				return &usageError{fmt.Errorf("--timeout %v: want a positive duration such as 10s", opts.timeout)}
			}
			*started = true
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&opts.addr, "addr", "", "taskd address: unix:/path.sock, tcp://host:port or tls://host:port (default $TASKD_ADDR, else "+wire.DefaultAddr()+")")
	pf.StringVarP(&opts.output, "output", "o", "table", "output format: table or json")
	opts.tls.addFlags(pf.StringVar)
	pf.DurationVar(&opts.timeout, "timeout", 10*time.Second, "give up after this long (reload, unless this is set: after "+client.DefaultReloadTimeout.String()+")")

	root.AddCommand(newPingCmd(opts), newStatusCmd(opts), newReloadCmd(opts), newCallCmd(opts))
	root.AddCommand(newBenchCmd(opts))
	root.AddCommand(newLogsCmd(opts), newTopCmd(opts))
	root.AddCommand(newSteerCmds(opts)...) // drain, resume, retire, kill, scale
	root.AddCommand(newCheckoutsCmd(opts))
	root.AddCommand(newReadyCmd(opts)) // for readiness probes (deploy/kubernetes)
	return root
}

// newClient returns a client for iface ("" for admin requests) whose Config.Timeout is
// --timeout: it bounds each ping, status request, checkout and call made with a context
// without a deadline (a one-shot Client.Call as a whole). The caller closes the client.
func (o *options) newClient(iface string) (*client.Client, error) {
	addr := o.addr
	if addr == "" {
		addr = os.Getenv("TASKD_ADDR")
	}
	tlsCfg, err := o.tls.config(addr)
	if err != nil {
		return nil, err
	}
	c, err := client.New(client.Config{Addr: o.addr, Interface: iface, Timeout: o.timeout, TLS: tlsCfg})
	if err != nil {
		return nil, &usageError{err}
	}
	return c, nil
}

// args wraps a cobra argument check so that its failure is a usage error.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return &usageError{err}
		}
		return nil
	}
}
