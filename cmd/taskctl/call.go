package main

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

func newCallCmd(opts *options) *cobra.Command {
	return &cobra.Command{
		Use:   "call IFACE METHOD [ARG...]",
		Short: "Call a worker method and print its JSON result",
		Long: `call makes a one-shot call: in one request, taskd checks out a worker of interface
IFACE, calls METHOD with the given arguments and releases the worker; taskctl prints the
result as JSON on stdout. METHOD "" makes a function-style call. Each ARG is used as
JSON if it is valid JSON (123, true, null, '"quoted"', '{"a":1}', '[1,2]'), else as a
string: taskctl call passwd hash secret.`,
		Example: `  taskctl call echo echo hello 42 '{"nested":[1,2]}'
  taskctl call passwd hash secret
  taskctl call passwd verify '"$2a$10$..."' secret`,
		Args: args(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := opts.newClient(a[0])
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			var res json.RawMessage
			if err := c.Call(ctx, a[1], &res, parseArgs(a[2:])...); err != nil {
				return err
			}
			return printResult(opts, res)
		},
	}
}

// parseArgs turns command-line arguments into call arguments: an argument that is valid
// JSON is passed as that JSON value, any other as a string.
func parseArgs(in []string) []any {
	out := make([]any, len(in))
	for i, s := range in {
		if json.Valid([]byte(s)) {
			out[i] = json.RawMessage(s)
		} else {
			out[i] = s
		}
	}
	return out
}

// printResult prints a call result: compact with -o json, indented otherwise. Numbers are
// printed as the worker sent them.
func printResult(opts *options, res json.RawMessage) error {
	var buf bytes.Buffer
	var err error
	if opts.output == "json" {
		err = json.Compact(&buf, res)
	} else {
		err = json.Indent(&buf, res, "", "  ")
	}
	if err != nil {
		return fmt.Errorf("result is not valid JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err = opts.stdout.Write(buf.Bytes())
	return err
}
