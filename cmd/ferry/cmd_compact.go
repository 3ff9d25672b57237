package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
)

func newCompactCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "compact [--json]",
		Short: "(office) Start a new epoch of history: drop old history, keep the recent values, free the disk",
		Long: `Start a new epoch of history (office nodes only). The store keeps every
value ever written until it is compacted: the new epoch starts from the
records as they are now, keeps for every field its last history_keep
superseded values (config.yaml, default 10) with their writer and time,
drops everything older and frees the disk.

Every other node moves to the new epoch by itself as soon as it hears of
it: it carries over the edits the office did not have yet (a laptop that
was offline loses nothing), keeps its recent history the same way and frees
its disk too. An office can also compact by itself (compact_every,
compact_history_ratio in config.yaml).

Works with the node running (through it) or stopped (the store is opened by
this command, without the network). Refused while the store is still
syncing (blocks received but not merged yet, or a repair pending): try
again in a moment.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := datadir.ReadSettings(g.dir)
			if err != nil {
				return err
			}
			if s.Role != node.RoleOffice {
				return notOfficeError(s.Role)
			}
			var res apijson.CompactResult
			err = withClient(cmd.Context(), g.dir, func(c *client) error {
				res, err = c.Compact(cmd.Context())
				return err
			})
			if err != nil {
				return compactError(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			return printCompact(cmd.OutOrStdout(), res)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// notOfficeError refuses a compaction on a node that is not an office.
func notOfficeError(role string) error {
	if role == "" {
		role = "node without a role"
	}
	return fmt.Errorf("not compacted: only an office node compacts, and this node is a %s; run 'ferry compact' on an office: this node moves to the new epoch by itself", role)
}

// compactError says in words why the node refused to compact.
func compactError(err error) error {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return err
	}
	msg := strings.TrimPrefix(ae.Msg, "compact: ")
	switch {
	case ae.Status == http.StatusConflict:
		return fmt.Errorf("not compacted: the store is still syncing, try again in a moment (%s)", msg)
	case strings.Contains(ae.Msg, "only an office"):
		return fmt.Errorf("not compacted: %s; run 'ferry compact' on an office: this node moves to the new epoch by itself", msg)
	}
	return fmt.Errorf("not compacted: %s", msg)
}

// printCompact renders what a compaction did.
func printCompact(w io.Writer, r apijson.CompactResult) error {
	lines := []string{
		fmt.Sprintf("compacted: now in epoch %s (was %s)", r.Epoch, r.Prev),
		fmt.Sprintf("  seeded:       %s of %s (the records as they are)", plural(r.Seeded, "write"), plural(r.Records, "record")),
		fmt.Sprintf("  carried over: %s made meanwhile", plural(r.Carried, "write")),
		fmt.Sprintf("  history kept: recent values of %s (history_keep)", plural(r.Archived, "record")),
		fmt.Sprintf("  dropped:      %s and %s of epoch %s", plural(r.DroppedKeys, "key"), plural(r.DroppedBlocks, "block"), r.Prev),
		"  store:        " + storeChange(r.StoreBefore, r.StoreAfter),
		fmt.Sprintf("  took:         %s", (time.Duration(r.TookMS) * time.Millisecond).String()),
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n")+"\n")
	return err
}

// storeChange renders the store's size before and after: "12 MiB → 3.1 MiB
// (freed 8.9 MiB)".
func storeChange(before, after int64) string {
	before, after = max(before, 0), max(after, 0)
	s := humanize.IBytes(uint64(before)) + " → " + humanize.IBytes(uint64(after))
	if after < before {
		s += " (freed " + humanize.IBytes(uint64(before-after)) + ")"
	}
	return s
}
