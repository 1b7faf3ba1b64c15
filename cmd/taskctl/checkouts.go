package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/taskd-dev/taskd/pkg/client"
)

func newCheckoutsCmd(opts *options) *cobra.Command {
	return &cobra.Command{
		Use:   "checkouts [IFACE]",
		Short: "Show who holds which worker: the checkouts held now",
		Long: `checkouts lists the checkouts that taskd's clients hold now, of every interface or of
IFACE: the checkout's id, its worker (id and pid), its holder (the name the application
gave, its pid and uid, or its TCP address, and the names of its verified TLS client
certificate in parentheses), how long it has been held, how many calls
were made on it, and the call running now and for how long. A checkout held longer than
its interface's checkout_warn_after is marked "!" in the first column.`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			iface := ""
			if len(a) > 0 {
				iface = a[0]
			}
			c, err := opts.newClient("")
			if err != nil {
				return err
			}
			defer c.Close()
			list, err := c.Checkouts(cmd.Context(), iface)
			if err != nil {
				return err
			}
			if opts.output == "json" {
				enc := json.NewEncoder(opts.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			return renderCheckouts(opts.stdout, list)
		},
	}
}

// renderCheckouts writes list as a table, one row per checkout.
func renderCheckouts(w io.Writer, list []client.CheckoutInfo) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "no checkouts held")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\tCO\tINTERFACE\tWORKER\tPID\tHOLDER\tHOLDER PID\tUID\tHELD FOR\tCALLS\tMETHOD\tRUNNING FOR")
	for _, ci := range list {
		mark := ""
		if ci.Warn {
			mark = "!"
		}
		id := strconv.FormatUint(ci.ID, 10)
		if ci.Once {
			id += " (call)"
		}
		if ci.Direct {
			id += " (direct)"
		}
		method, running := "-", "-"
		if ci.Method != "" || ci.CallRunning > 0 {
			method = ci.Method
			if method == "" {
				method = "()" // function-style call
			}
			running = fmtDur(ci.CallRunning)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", mark, id, ci.Interface, ci.Worker, ci.PID,
			holderName(ci.Holder), holderPID(ci.Holder), holderUID(ci.Holder), fmtDur(ci.Held), ci.Calls, method, running)
	}
	return tw.Flush()
}

// holderName is the holder's name as the application gave it, else the process name the
// kernel knows, else "-"; followed by the names of its verified TLS client certificate,
// if it has one: "webapp (spiffe://example.org/web)".
func holderName(h client.Holder) string {
	name := "-"
	switch {
	case h.Name != "":
		name = h.Name
	case h.Comm != "":
		name = h.Comm
	}
	if len(h.TLSNames) > 0 {
		name += " (" + strings.Join(h.TLSNames, ",") + ")"
	}
	return name
}

// holderPID is the holder's pid, or its TCP address if it has none.
func holderPID(h client.Holder) string {
	switch {
	case h.PID > 0:
		return strconv.Itoa(h.PID)
	case h.Addr != "":
		return h.Addr
	}
	return "-"
}

func holderUID(h client.Holder) string {
	if h.UID < 0 {
		return "-"
	}
	return strconv.Itoa(h.UID)
}
