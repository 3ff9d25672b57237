package main

import (
	"fmt"
	"io"

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
