package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newChannelsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "channels",
		Short: "List the channels this node holds, its grants and every channel of the network",
		Long: `List the channels this node holds (records, size on disk, edits not yet
at an office; on an office, the members granted each), the channels being
left (their edits handed over to an office, then purged), this node's
grants, what it takes offline (ferry subscribe) and every channel known.
A channel is a part of the records: a routed collection (schema
'channel: {field: ...}') puts each record in the channel its field names,
and a laptop holds only the channels an office granted it.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				cs, err := c.Channels(cmd.Context())
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), cs)
				}
				out := cmd.OutOrStdout()
				tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "CHANNEL\tSTATE\tRECORDS\tDISK\tUNACKED\tGRANTED TO")
				for _, ch := range cs.Held {
					records, unacked := "…", "-"
					if ch.Records != nil {
						records = fmt.Sprint(*ch.Records)
					}
					if ch.Unacked != nil {
						unacked = fmt.Sprint(ch.Unacked.Count)
					}
					state := ch.State
					if ch.Waiting != "" {
						state += " (" + ch.Waiting + ")"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ch.Name, state, records, humanBytes(ch.Bytes), unacked, strings.Join(ch.Peers, ", "))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if len(cs.Held) == 0 {
					fmt.Fprintln(out, "(no channel held)")
				}
				switch {
				case cs.Granted == nil:
					fmt.Fprintln(out, "granted: every channel (open network)")
				case len(cs.Granted) == 1 && cs.Granted[0] == "*":
					fmt.Fprintln(out, "granted: every channel (office)")
				default:
					fmt.Fprintf(out, "granted: %s\n", listOrNone(cs.Granted))
				}
				if cs.Subscribed != nil {
					fmt.Fprintf(out, "taken offline: %s (ferry subscribe / unsubscribe)\n", listOrNone(cs.Subscribed))
				}
				fmt.Fprintf(out, "known: %s\n", listOrNone(cs.Known))
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

func newGrantCmd(g *globals, grant bool) *cobra.Command {
	use, short, long := "grant MEMBER CHANNEL...", "Grant a member channels (office only)",
		`Grant a member (peer id or name) channels (office only): the member's node
fetches their records and keeps them in sync. Grants are replicated and
signed like the membership; a channel needs no other declaration.`
	if !grant {
		use, short, long = "ungrant MEMBER CHANNEL...", "End a member's grants of channels (office only)",
			`End a member's grants of channels (office only). Its node stops receiving
them at once; it hands the edits of them that no office holds yet over to
an office, then purges them from its disk (a laptop offline now does so at
its next contact). A purge is never replicated as a delete. The member's
edits made after this are ignored everywhere.`
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  minArgs(2, "MEMBER CHANNEL..."),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				res, err := c.Grant(cmd.Context(), args[0], args[1:], grant)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s is granted: %s\n", res.Member, listOrNone(res.Channels))
				return nil
			})
		},
	}
}

func newSubscribeCmd(g *globals, subscribe bool) *cobra.Command {
	use, short := "subscribe CHANNEL...", "Take granted channels offline again (laptop)"
	long := `Take channels offline again on this laptop: its node fetches them and keeps
them in sync, within its grants. By default a laptop takes every channel it
is granted; 'ferry unsubscribe' narrows that (the choice is kept in
config.yaml, key channels).`
	if !subscribe {
		use, short = "unsubscribe CHANNEL...", "Stop taking channels offline (laptop)"
		long = `Stop taking channels offline on this laptop, as Dynamics' offline filters do:
its node hands the edits of them that no office holds yet over to an
office, then purges them from its disk. The grants stay: 'ferry subscribe'
takes them again.`
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  minArgs(1, "CHANNEL..."),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				sub, err := c.Subscribe(cmd.Context(), args, subscribe)
				if err != nil {
					return err
				}
				if sub == nil {
					fmt.Fprintln(cmd.OutOrStdout(), "taking offline: every channel granted")
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "taking offline: %s\n", listOrNone(sub))
				return nil
			})
		},
	}
}

// humanBytes renders a size for people: 1.2 MiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
