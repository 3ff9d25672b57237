package node

import (
	"context"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
)

// TestLaptopRecoversOnceOfficeIsRepaired: an office whose history lost a
// block (a full disk under the old release) hands a laptop a DAG the laptop
// cannot finish walking: the laptop stays dirty. Once the office repairs
// itself (ferry check --repair: the branch is cut, its values written
// again), the laptop recovers on its own: it gets every value, cuts the
// same branch, and is whole again, without anybody touching it.
func TestLaptopRecoversOnceOfficeIsRepaired(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 1)
	office := c.nodes[0]
	// Fetches of a block nobody has give up fast.
	c.nodes[1].cfg.Store.DAGSyncerTimeout = 2 * time.Second
	c.restart(1)
	c.waitConverged()
	c.setOffline(true, 1)

	put(t, office, "x", map[string]any{"last_name": "InTheLostBlock"})
	if h := office.Status(ctx).Heads; len(h) != 1 {
		t.Fatalf("office heads %v", h)
	}
	lostBlock := office.Store().Stats(ctx).Heads[0]
	if err := office.bstore.DeleteBlock(ctx, lostBlock); err != nil {
		t.Fatal(err)
	}
	put(t, office, "y", map[string]any{"last_name": "AboveTheLostBlock"})

	c.setOffline(false, 1)
	laptop := c.nodes[1]
	testnet.WaitFor(t, 30*time.Second, func() bool {
		st := laptop.Status(ctx)
		return st.Dirty
	})
	rep, err := laptop.Check(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("laptop before the office's repair: %v", rep.Problems)
	if rep.OK {
		t.Fatal("the laptop's check says whole while its history misses a block")
	}

	rep, err = office.Check(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || len(rep.MissingBlocks) != 1 {
		t.Fatalf("office check before repair: %+v", rep)
	}
	rep, err = office.Check(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("office repair: %v", rep.Repaired)
	if !rep.OK {
		t.Fatalf("office check after repair: %v", rep.Problems)
	}

	testnet.WaitFor(t, 60*time.Second, func() bool {
		st := laptop.Status(ctx)
		if st.Dirty {
			return false
		}
		for _, id := range []string{"x", "y"} {
			if _, err := laptop.Store().Get(ctx, "contacts", id); err != nil {
				return false
			}
		}
		return true
	})
	c.waitConverged()
	for _, n := range c.nodes {
		rep, err := n.Check(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK {
			t.Errorf("%s after recovery: %v", n.cfg.Name, rep.Problems)
		}
		rec, err := n.Store().Get(ctx, "contacts", "x")
		if err != nil || rec.Fields["last_name"].Value != "InTheLostBlock" {
			t.Errorf("%s: the value of the lost block: %v %v", n.cfg.Name, rec, err)
		}
	}
}
