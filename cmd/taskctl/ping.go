package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newPingCmd(opts *options) *cobra.Command {
	return &cobra.Command{
		Use:   "ping",
		Short: "Check that taskd answers; print its version and the round-trip time",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opts.newClient("")
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			res, err := c.Ping(ctx)
			if err != nil {
				return err
			}
			addr := c.Addr()
			if opts.output == "json" {
				return json.NewEncoder(opts.stdout).Encode(struct {
					Addr    string  `json:"addr"`
					Version string  `json:"version"`
					RTTMs   float64 `json:"rtt_ms"`
				}{addr, res.Version, float64(res.RTT) / float64(time.Millisecond)})
			}
			_, err = fmt.Fprintf(opts.stdout, "taskd %s at %s: round trip %v\n", res.Version, addr, res.RTT.Round(time.Microsecond))
			return err
		},
	}
}
