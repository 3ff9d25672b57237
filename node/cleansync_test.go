package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func TestCleanSyncCopiesTheOfficeAndRefusesUnackedEdits(t *testing.T) {
	c := newCluster(t, 1)
	ctx := context.Background()
	office, laptop := c.nodes[0], c.nodes[1]
	for i := range 300 {
		put(t, office, fmt.Sprintf("o%d", i), map[string]any{"last_name": "Office"})
	}
	c.waitConverged()
	// The laptop edits offline, then stops: its edits are not at the office.
	c.setOffline(true, 1)
	put(t, laptop, "mine", map[string]any{"last_name": "Laptop only"})
	cfg := laptop.cfg
	if err := laptop.Close(); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := CleanSync(cctx, cfg, false, nil); !errors.Is(err, ErrUnackedEdits) {
		t.Fatalf("clean sync over an unacknowledged edit: want ErrUnackedEdits, got %v", err)
	}
	var phases []string
	res, err := CleanSync(cctx, cfg, true, func(p CleanSyncProgress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Discarded != 1 || res.Peer != office.ID() || res.Entries == 0 || phases[0] != "copying" || phases[len(phases)-1] != "done" {
		t.Errorf("result %+v, phases %v", res, phases)
	}
	// A fresh data dir copies the office too.
	fresh := c.enrol(filepath.Join(t.TempDir(), "fresh"), "fresh", RoleLaptop, cfg.Peers, &settableClock{t: time.Now()})
	if _, err := CleanSync(cctx, fresh, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []Config{cfg, fresh} {
		n, err := Start(ctx, func() Config { d := dir; d.Network = false; return d }())
		if err != nil {
			t.Fatal(err)
		}
		c2 := &clusterNode{Node: n, cfg: dir}
		got := visible(t, c2)
		want := visible(t, office)
		if got != want {
			t.Errorf("%s after clean sync differs from the office", dir.Name)
		}
		if _, err := n.Store().Get(ctx, "contacts", "mine"); err == nil {
			t.Errorf("%s still has the discarded local edit", dir.Name)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
	c.nodes = c.nodes[:1] // the laptop is closed already
}
