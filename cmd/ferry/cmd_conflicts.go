package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/schema"
)

func newConflictsCmd(g *globals) *cobra.Command {
	var asJSON, onlyOpen bool
	cmd := &cobra.Command{
		Use:   "conflicts [COLLECTION]",
		Short: "List conflicts: concurrent values of a field, or a delete concurrent with edits",
		Long: `List every conflict: fields with several concurrent values (writes that did
not see each other) and records deleted while being edited elsewhere. Each
shows its candidates, the one currently shown first (*), with writer and
time, and whether its policy decided it or it waits for a person (open,
policy manual). --open lists only those. Resolve with 'ferry resolve'.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("conflicts: want at most one COLLECTION")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			collection := ""
			if len(args) == 1 {
				collection = args[0]
			}
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				cs, err := c.Conflicts(cmd.Context(), collection, onlyOpen)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), cs)
				}
				if len(cs) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "no conflicts")
					return nil
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				for _, cf := range cs {
					what := "field " + cf.Field
					if cf.Field == crdt.RecordField {
						what = "record (deleted and edited concurrently)"
					}
					fmt.Fprintf(tw, "%s/%s %s: %s\n", cf.Collection, cf.ID, what, conflictState(cf.Policy, cf.Open))
					printCandidates(tw, cf.Candidates)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&onlyOpen, "open", false, "only conflicts waiting for a person")
	return cmd
}

func newResolveCmd(g *globals) *cobra.Command {
	var pick int
	var value string
	cmd := &cobra.Command{
		Use:   "resolve COLLECTION ID FIELD (--pick N | --value V)",
		Short: "End a conflict: pick a candidate or write a new value",
		Long: `End a conflict. --pick N chooses candidate N as 'ferry conflicts' lists
it; --value V writes a new value (parsed by the field's type). The
resolution is an ordinary write that supersedes every candidate, so the
conflict disappears on every node once they sync. For a record deleted and
edited concurrently, use FIELD _record and --pick: picking a delete deletes
the record, picking an edit keeps it with all its fields.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 3 {
				return usagef("resolve: want COLLECTION ID FIELD and --pick N or --value V")
			}
			if cmd.Flags().Changed("pick") == cmd.Flags().Changed("value") {
				return usagef("resolve: give exactly one of --pick N and --value V")
			}
			if cmd.Flags().Changed("pick") && pick < 1 {
				return usagef("resolve: --pick counts from 1")
			}
			return checkRecordArgs(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req := apijson.ResolveRequest{Pick: pick}
			if cmd.Flags().Changed("value") {
				req.Pick, req.Text = 0, &value
			}
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				if _, err := c.Resolve(cmd.Context(), args[0], args[1], args[2], req); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "resolved %s/%s %s\n", args[0], args[1], args[2])
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&pick, "pick", 0, "candidate number, as 'ferry conflicts' lists them")
	cmd.Flags().StringVar(&value, "value", "", "a new value")
	return cmd
}

func newHistoryCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "history COLLECTION ID [FIELD]",
		Short: "Every value a record's fields had: who wrote it, when, what it replaced",
		Long: `Show every operation ever written to a record (or one field of it), oldest
first: the value, the writer and the time, the operations it superseded,
whether it is still visible, and whether it was written here or arrived
from a peer. Built from what the store keeps (go-ds-crdt keeps every
operation and every DAG block), so it is complete for the data this node
has; see docs/merge-rules.md.

After a compaction (ferry compact) the older operations are gone: each
field keeps its last history_keep superseded values (config.yaml, default
10) with their writer and time only, shown as "compacted".`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 || len(args) > 3 {
				return usagef("history: want COLLECTION ID [FIELD]")
			}
			return checkRecordArgs(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			field := ""
			if len(args) == 3 {
				field = args[2]
			}
			return withClient(cmd.Context(), g.dir, func(c *client) error {
				h, err := c.History(cmd.Context(), args[0], args[1], field)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), h)
				}
				return printHistory(cmd.OutOrStdout(), h)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// compactedNote follows a history with compacted operations.
const compactedNote = "compacted: from before a compaction, kept with value, writer and time only (older values are gone)"

// printHistory writes the `ferry history` table, oldest first. A compacted
// operation's STATE is "compacted" (it was superseded; what it superseded
// is not kept) and a note follows the table.
func printHistory(w io.Writer, h []apijson.History) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tFIELD\tVALUE\tWRITER\tORIGIN\tSTATE\tSUPERSEDES")
	compacted := false
	for _, e := range h {
		val := quoteIfNeeded(schema.FormatText(e.Value))
		if e.Deleted {
			val = "(deleted the record)"
		}
		state, supersedes := "visible", fmt.Sprint(len(e.Supersedes))
		switch {
		case e.Compacted:
			state, supersedes, compacted = "compacted", "-", true
		case !e.Visible:
			state = "superseded"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.At.Format(time.RFC3339), e.Field, val,
			writerName(e.Writer, e.WriterName), e.Origin, state, supersedes)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if compacted {
		_, err := fmt.Fprintln(w, compactedNote)
		return err
	}
	return nil
}
