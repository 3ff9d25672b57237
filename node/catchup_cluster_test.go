package node

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Two laptops each make many single edits offline (one DAG block each);
// back online they catch up through the bulk block sync, not block by block
// over bitswap (~48 blocks/s here).
func TestClusterCatchUpAfterManyOfflineEdits(t *testing.T) {
	edits := 1000
	if testing.Short() {
		edits = 100
	}
	c := newCluster(t, 2)
	ctx := context.Background()
	put(t, c.nodes[0], "base", map[string]any{"last_name": "Base"})
	c.waitConverged()
	c.setOffline(true, 1, 2)
	for i := range edits {
		put(t, c.nodes[1], fmt.Sprintf("l1-%d", i%50), map[string]any{"last_name": fmt.Sprint("v", i)})
		put(t, c.nodes[2], fmt.Sprintf("l2-%d", i%50), map[string]any{"last_name": fmt.Sprint("v", i)})
	}
	start := time.Now()
	c.setOffline(false, 1, 2)
	c.waitConverged()
	t.Logf("%d offline single edits on each of two laptops converged in %s", edits, time.Since(start))
	for _, n := range c.nodes {
		rec, err := n.Store().Get(ctx, "contacts", "l2-49")
		if err != nil || rec.Fields["last_name"].Value != fmt.Sprint("v", edits-1) {
			t.Errorf("%s: l2-49 = %v, %v", n.cfg.Name, rec, err)
		}
	}
	// The blocks came in bulk: every node received at least the other
	// laptop's edits through the block sync.
	for _, n := range c.nodes {
		if got := n.Status(ctx).BlocksFetched; got < int64(edits) {
			t.Errorf("%s fetched %d blocks in bulk, want at least %d", n.cfg.Name, got, edits)
		}
	}
}
