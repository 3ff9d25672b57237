package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ferry-crm/ferry/crdt"
)

// exitCheckProblems: check found the store not whole (after the repair,
// with --repair).
const exitCheckProblems = 5

func newCheckCmd(g *globals) *cobra.Command {
	var repair, asJSON bool
	cmd := &cobra.Command{
		Use:   "check [--repair] [--json]",
		Short: "Check that the store is whole; --repair fixes what it can (exit 5: problems remain)",
		Long: `Check that the local store is whole: every block of the history reachable
from the heads is held here and merged, no merged block is out of reach of
the heads (its changes would show here and never reach a peer), and every
visible value is carried by a block of the history (or no peer could ever
receive it). A write or a merge that failed (a full disk, for instance)
can leave a store that is not whole.

--repair fixes what can be fixed: merged blocks out of reach become heads
again, missing blocks are fetched from connected peers (with a running,
online node), branches whose blocks are lost for good are cut from the
heads, values carried by no block are written again in new deltas, and the
history is merged again. It prints what it did, then checks again.

Works with the node running (through it) or stopped (the store is opened by
this command, without the network: missing blocks cannot be fetched then).

Exit codes: 0 the store is whole (after the repair, with --repair); 5 it is
not (the problems are listed); 1 the check itself failed; 2 usage.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/v1/check"
			if repair {
				path += "?repair=1"
			}
			var rep crdt.CheckReport
			err := withClient(cmd.Context(), g.dir, func(c *client) error {
				return c.Do(cmd.Context(), "POST", path, nil, &rep)
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(out, rep); err != nil {
					return err
				}
			} else {
				for _, line := range rep.Repaired {
					fmt.Fprintf(out, "repaired: %s\n", line)
				}
				if rep.OK {
					fmt.Fprintf(out, "store is whole: %s, %s\n", plural(rep.Heads, "head"), plural(rep.Blocks, "block"))
				} else {
					for _, p := range rep.Problems {
						fmt.Fprintln(out, p)
					}
					if repair {
						fmt.Fprintln(out, "the repair could not fix everything: start the node online so that peers can send what is missing, then run 'ferry check --repair' again")
					} else {
						fmt.Fprintln(out, "run 'ferry check --repair'")
					}
				}
			}
			if !rep.OK {
				return &codedError{code: exitCheckProblems, err: errors.New("the store is not whole: " + plural(len(rep.Problems), "problem"))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "repair what can be repaired, then check again")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}
