package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-datastore/query"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/datadir"
)

// TestClusterCompaction: real nodes on loopback. The office compacts while
// one laptop is offline; the online laptop moves to the new epoch through
// the network (bulk fetch, then merge); the offline one comes back with
// edits and a delete made in the old epoch, moves and carries them over.
// Everyone ends in the same epoch with the same records, and no key of the
// old epoch is left.
func TestClusterCompaction(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 2)
	office, online, away := c.nodes[0], c.nodes[1], c.nodes[2]
	for i := range 20 {
		put(t, office, fmt.Sprintf("c%d", i), map[string]any{"last_name": "L", "phone": "0"})
	}
	for v := 1; v <= 20; v++ {
		for i := range 20 {
			put(t, office, fmt.Sprintf("c%d", i), map[string]any{"phone": fmt.Sprint(v)})
		}
	}
	c.waitConverged()
	c.setOffline(true, 2)
	put(t, away, "c1", map[string]any{"phone": "away"})
	if _, err := away.Store().Delete(ctx, "contacts", "c2"); err != nil {
		t.Fatal(err)
	}
	if _, err := online.Compact(ctx); err == nil || !strings.Contains(err.Error(), "office") {
		t.Fatalf("a laptop compacted: %v", err)
	}
	res, err := office.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The store's size on disk is measured by the compaction benchmark: a
	// store this small lives in badger's head value-log file, which GC
	// never rewrites.
	if !strings.HasPrefix(res.Epoch, "1-") || res.DroppedKeys == 0 || res.DroppedBlocks == 0 || res.StoreAfter == 0 {
		t.Errorf("compaction: %+v", res)
	}
	testnet.WaitFor(t, 30*time.Second, func() bool { return online.Store().Epoch().String() == res.Epoch })
	put(t, online, "c3", map[string]any{"phone": "after"})
	c.setOffline(false, 2)
	testnet.WaitFor(t, 30*time.Second, func() bool { return away.Store().Epoch().String() == res.Epoch })
	c.waitConverged()
	for _, n := range c.nodes {
		st := n.Status(ctx)
		if st.Epoch == nil || st.Epoch.Epoch != res.Epoch || st.Epoch.StartedBy != office.self.String() {
			t.Errorf("%s: status epoch %+v", n.cfg.Name, st.Epoch)
		}
		rec, err := n.Store().Get(ctx, "contacts", "c1")
		if err != nil || rec.Values()["phone"] != "away" {
			t.Errorf("%s: c1 %v %v", n.cfg.Name, rec, err)
		}
		if _, err := n.Store().Get(ctx, "contacts", "c2"); !errors.Is(err, crdt.ErrNotFound) {
			t.Errorf("%s: c2 not deleted (%v)", n.cfg.Name, err)
		}
		if rec, err := n.Store().Get(ctx, "contacts", "c3"); err != nil || rec.Values()["phone"] != "after" {
			t.Errorf("%s: c3 %v %v", n.cfg.Name, rec, err)
		}
		// The old epoch is dropped after the switch (the epoch shows
		// before its keys are gone): wait for it, with a deadline.
		var left []query.Entry
		gone := testnet.Eventually(30*time.Second, func() bool {
			res, err := n.base.Query(ctx, query.Query{Prefix: "/ferry/crdt/", KeysOnly: true, Limit: 1})
			if err != nil {
				t.Fatal(err)
			}
			left, _ = res.Rest()
			return len(left) == 0
		})
		if !gone {
			t.Errorf("%s still holds old-epoch key %s", n.cfg.Name, left[0].Key)
		}
	}
	peers, err := office.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.Connected && p.Epoch != res.Epoch {
			t.Errorf("peer %s: epoch %q", p.Name, p.Epoch)
		}
	}
	// The office restarts in the new epoch.
	c.restart(0)
	if got := c.nodes[0].Store().Epoch().String(); got != res.Epoch {
		t.Errorf("office restarted in epoch %s", got)
	}
	c.waitConverged()
}

// TestClusterCompactionPolicy: an office with compact_history_ratio set
// compacts by itself once its history outgrows the ratio, and the laptop
// follows.
func TestClusterCompactionPolicy(t *testing.T) {
	c := newCluster(t, 1)
	for v := range 6 {
		for i := range 10 {
			put(t, c.nodes[0], fmt.Sprintf("c%d", i), map[string]any{"last_name": "L", "phone": fmt.Sprint(v)})
		}
	}
	c.waitConverged()
	h, err := c.nodes[0].Store().HistorySize(context.Background())
	if err != nil || h.Ratio() < 2 {
		t.Fatalf("history before: %+v %v", h, err)
	}
	// The policy as Start runs it on an office configured with it.
	office := c.nodes[0].Node
	office.cfg.CompactRatio, office.cfg.CompactCheck, office.cfg.compactMinWrites = 2, 50*time.Millisecond, 20
	office.life.Go(office.compactLoop)
	testnet.WaitFor(t, 30*time.Second, func() bool {
		return c.nodes[0].Store().Epoch().Number == 1 && c.nodes[1].Store().Epoch() == c.nodes[0].Store().Epoch()
	})
	h, err = c.nodes[0].Store().HistorySize(context.Background())
	if err != nil || h.Ratio() >= 2 {
		t.Errorf("history after the policy's compaction: %+v %v", h, err)
	}
	// Once compacted, the ratio is low: the policy asks for nothing more.
	if why := c.nodes[0].compactDue(context.Background(), time.Now()); why != "" {
		t.Errorf("policy still asks for a compaction: %s", why)
	}
	c.waitConverged()
}

func TestCompactionSettings(t *testing.T) {
	dir := t.TempDir()
	keep := func(n int) *int { return &n }
	good := []datadir.Settings{
		{Role: RoleOffice, HistoryKeep: keep(0), CompactEvery: "168h", CompactHistoryRatio: 4},
		{Role: RoleLaptop, HistoryKeep: keep(25)},
	}
	for _, s := range good {
		cfg, err := ConfigFromSettings(dir, &s)
		if err != nil {
			t.Errorf("%+v: %v", s, err)
			continue
		}
		if cfg.Store.HistoryKeep != *s.HistoryKeep || cfg.CompactRatio != s.CompactHistoryRatio {
			t.Errorf("%+v: history_keep %d, ratio %g", s, cfg.Store.HistoryKeep, cfg.CompactRatio)
		}
	}
	if cfg, _ := ConfigFromSettings(dir, &datadir.Settings{Role: RoleLaptop}); cfg.Store.HistoryKeep != 10 || cfg.CompactEvery != 0 {
		t.Errorf("defaults: history_keep %d, compact_every %s", cfg.Store.HistoryKeep, cfg.CompactEvery)
	}
	bad := []struct {
		s    datadir.Settings
		want string
	}{
		{datadir.Settings{Role: RoleOffice, HistoryKeep: keep(-1)}, "history_keep"},
		{datadir.Settings{Role: RoleOffice, HistoryKeep: keep(5000)}, "history_keep"},
		{datadir.Settings{Role: RoleOffice, CompactEvery: "10s"}, "compact_every"},
		{datadir.Settings{Role: RoleOffice, CompactEvery: "weekly"}, "compact_every"},
		{datadir.Settings{Role: RoleOffice, CompactHistoryRatio: 1.2}, "compact_history_ratio"},
		{datadir.Settings{Role: RoleLaptop, CompactEvery: "24h"}, "only an office"},
	}
	for _, tc := range bad {
		if _, err := ConfigFromSettings(dir, &tc.s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error about %s", tc.s, err, tc.want)
		}
	}
}

// TestCleanSyncAfterCompaction: a fresh node copies a compacted office:
// it opens in the office's epoch with the same records and the history
// the office kept.
func TestCleanSyncAfterCompaction(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 0)
	office := c.nodes[0]
	for v := range 4 {
		for i := range 30 {
			put(t, office, fmt.Sprintf("c%d", i), map[string]any{"last_name": "L", "phone": fmt.Sprint(v)})
		}
	}
	res, err := office.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	fresh := c.enrol(filepath.Join(t.TempDir(), "fresh"), "fresh", RoleLaptop, office.Addrs()[:1], &settableClock{t: time.Now()})
	if _, err := CleanSync(cctx, fresh, false, nil); err != nil {
		t.Fatal(err)
	}
	fresh.Network = false
	n, err := Start(ctx, fresh)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if got := n.Store().Epoch().String(); got != res.Epoch {
		t.Errorf("fresh node in epoch %s, office in %s", got, res.Epoch)
	}
	if got, want := visible(t, &clusterNode{Node: n}), visible(t, office); got != want {
		t.Errorf("fresh node differs from the office:\n%s\n%s", got, want)
	}
	h, err := n.Store().History(ctx, "contacts", "c7", "phone")
	if err != nil {
		t.Fatal(err)
	}
	compacted := 0
	for _, e := range h {
		if e.Compacted {
			compacted++
		}
	}
	if compacted != 2 { // p1 and p2; p0 stays in the first write (last_name), p3 shows
		t.Errorf("fresh node's history of c7.phone: %+v", h)
	}
}

// TestFreshNodeJoinsCompactedOffice: a node that never synced catches up
// with a compacted office through the DAG (no snapshot): it moves to the
// office's epoch and shows everything.
func TestFreshNodeJoinsCompactedOffice(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 0)
	office := c.nodes[0]
	for v := range 3 {
		for i := range 30 {
			put(t, office, fmt.Sprintf("c%d", i), map[string]any{"last_name": "L", "phone": fmt.Sprint(v)})
		}
	}
	res, err := office.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clock := &settableClock{t: time.Now()}
	dir := filepath.Join(t.TempDir(), "fresh")
	cfg := c.enrol(dir, "fresh", RoleLaptop, office.Addrs()[:1], clock)
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.nodes = append(c.nodes, &clusterNode{Node: n, dir: dir, clock: clock, cfg: cfg})
	testnet.WaitFor(t, 30*time.Second, func() bool { return n.Store().Epoch().String() == res.Epoch })
	c.waitConverged()
	if got, want := visible(t, c.nodes[1]), visible(t, office); got != want || !strings.Contains(got, "c29{") {
		t.Errorf("fresh node shows\n%s\nthe office\n%s", got, want)
	}
}
