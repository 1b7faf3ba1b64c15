// Command taskd is the taskd daemon: it reads a config of named interfaces and runs a pool
// of worker processes for each, serving checkouts to clients until SIGTERM or SIGINT.
//
//	taskd -c /etc/taskd/taskd.yaml                 # run in the foreground
//	taskd --check-config -c /etc/taskd/taskd.yaml  # validate, exit 0 or 1
//
// See docs/config.md for the configuration file.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/sandbox"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// First: this executable also starts workers that have a umask or rlimits (the
	// helper, which never returns), and no_new_privs is set for all workers by
	// re-executing once. See internal/sandbox.
	sandbox.Main()
	if err := sandbox.RestrictSelf(); err != nil {
		fmt.Fprintln(os.Stderr, "taskd: "+err.Error())
		os.Exit(1)
	}
	if err := newCommand(os.Stdout, os.Environ()).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "taskd: "+strings.ReplaceAll(err.Error(), "\n", "\n  "))
		os.Exit(1)
	}
}

// newCommand returns the taskd command, which writes its output to stdout and takes
// TASKD_* config overrides from environ.
func newCommand(stdout io.Writer, environ []string) *cobra.Command {
	var configPath string
	var checkOnly bool
	cmd := &cobra.Command{
		Use:           "taskd -c FILE",
		Short:         "Run pools of worker processes and serve checkouts to clients",
		Version:       version,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return fmt.Errorf("no config file: run taskd -c FILE (configs/taskd.yaml is an example; docs/config.md has every key)")
			}
			cfg, err := config.Load(configPath, environ)
			if err != nil {
				return err
			}
			if checkOnly {
				_, err := fmt.Fprintf(stdout, "config OK: %d interfaces\n", len(cfg.Interfaces))
				return err
			}
			return run(cmd.Context(), cfg, configPath, environ)
		},
	}
	cmd.SetOut(stdout)
	cmd.Flags().StringVarP(&configPath, "config", "c", "", "config file (YAML)")
	cmd.Flags().BoolVar(&checkOnly, "check-config", false, "validate the config file and exit: 0 if valid, 1 with the problems if not")
	return cmd
}
