package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
)

// printIncompatiblePeers follows the `ferry peers` table: the peers not
// synced with because they run another store format, each with the
// message naming both formats and which node to upgrade. Nothing when
// there are none.
func printIncompatiblePeers(w io.Writer, peers []apijson.PeerInfo) error {
	var msgs []string
	for _, p := range peers {
		if p.Incompatible != "" {
			msgs = append(msgs, p.Incompatible)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	what := "peers"
	if len(msgs) == 1 {
		what = "peer"
	}
	if _, err := fmt.Fprintf(w, "\nnot syncing with %d %s (another store format):\n", len(msgs), what); err != nil {
		return err
	}
	for _, m := range msgs {
		if _, err := fmt.Fprintf(w, "  %s\n", m); err != nil {
			return err
		}
	}
	return nil
}

// printPeers writes the `ferry peers` table. The EPOCH column is there
// only when a peer's last heads came from another epoch than ours (this
// node's epoch): it says which one and which node moves.
func printPeers(w io.Writer, peers []apijson.PeerInfo, ours string) error {
	showEpoch := false
	for _, p := range peers {
		if epochRelation(ours, p.Epoch) != "" {
			showEpoch = true
		}
	}
	var buf strings.Builder
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	header := "PEER ID\tNAME\tROLE\tCONNECTED\tHOW KNOWN\tLAST SYNC"
	if showEpoch {
		header += "\tEPOCH"
	}
	fmt.Fprintln(tw, header)
	for _, p := range peers {
		last := "never"
		if !p.LastSync.IsZero() {
			last = p.LastSync.Format(time.RFC3339)
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%t\t%s\t%s", p.ID, p.Name, p.Role, p.Connected, howKnown(p), last)
		if showEpoch {
			line += "\t" + epochRelation(ours, p.Epoch)
		}
		fmt.Fprintln(tw, line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// No padding after the last cell (an empty EPOCH).
	for line := range strings.Lines(buf.String()) {
		if _, err := io.WriteString(w, strings.TrimRight(line, " \n")+"\n"); err != nil {
			return err
		}
	}
	return nil
}
