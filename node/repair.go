package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	cid "github.com/ipfs/go-cid"

	"github.com/ferry-crm/ferry/crdt"
)

// A node repairs itself. After an unclean shutdown, a failed merge or a
// failed write (a full disk), the store needs repair (crdt.Stats.Dirty).
// The repair loop tries every repairInterval until it succeeds, so a disk
// that fills up and frees again heals without a person:
//  1. the cheap part: blocks merged but out of reach of the heads become
//     heads again, and go-ds-crdt re-walks the DAG from the heads;
//  2. if that fails (blocks missing here), the whole check with repair:
//     missing blocks are asked from peers, and branches that lead to
//     blocks an office declared lost (it cut them, see crdt.LostCollection)
//     are cut here too.
//
// `ferry check --repair` runs step 2 at once; on an office it also declares
// lost and cuts the branches whose missing blocks no connected peer has,
// and writes again the visible values they carried.
const (
	repairInterval = 5 * time.Second
	// The full check reads every block and key (about 6 s for 100,000
	// contacts here): it runs at the first failed repair, 15 s later, then
	// twice as late each time it does not help, up to every 10 minutes.
	fullCheckFirst = 15 * time.Second
	fullCheckMax   = 10 * time.Minute
)

// repairLoop runs until ctx is done; now: repair at once (unclean start).
func (n *Node) repairLoop(ctx context.Context, now bool) {
	t := time.NewTicker(repairInterval)
	defer t.Stop()
	var lastFull time.Time
	wait := fullCheckFirst
	failing := false // a repair failed since the last success: log quietly
	for {
		if now || n.anyDirty(ctx) {
			all := now
			now = false
			err := n.repairStores(ctx, all)
			if err == nil {
				n.log.Info("store repaired")
				wait, failing = fullCheckFirst, false
				// What failed to merge meanwhile is asked again now, not
				// at the next periodic exchange.
				n.SyncNow(ctx)
			} else if ctx.Err() == nil {
				if !failing {
					n.log.Warn("repair did not complete; trying again every few seconds", "err", err)
				} else {
					n.log.Debug("repair did not complete", "err", err)
				}
				failing = true
				if time.Since(lastFull) > wait {
					if !lastFull.IsZero() {
						wait = min(2*wait, fullCheckMax)
					}
					lastFull = time.Now()
					if r, err := n.store.Check(ctx, n.checkOptions(false)); err != nil {
						n.log.Warn("check with repair", "err", err)
					} else if !r.OK {
						n.log.Warn("store still needs repair", "problems", r.Problems, "done", r.Repaired)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// anyDirty reports whether a store of the node (the everyone store, or a
// channel's) needs repair.
func (n *Node) anyDirty(ctx context.Context) bool {
	if n.store.Stats(ctx).Dirty {
		return true
	}
	for _, ch := range n.chans.all() {
		if ch.store.Stats(ctx).Dirty {
			return true
		}
	}
	return false
}

// mergeUnfinished reports whether a store held here, the everyone store's
// or a channel's, is still merging or needs repair: closed now, the next
// start must walk the DAGs again (the open marker stays). A channel
// store's was once left out: a command run on the data dir of a stopped
// node removed the marker while a channel still missed blocks below its
// heads, and no start walked it again (chaos seed 0x2d).
func (n *Node) mergeUnfinished(ctx context.Context) bool {
	if n.store == nil {
		return false
	}
	if st := n.store.Stats(ctx); st.QueuedJobs > 0 || st.Dirty {
		return true
	}
	for _, ch := range n.chans.all() {
		if ch.store == nil {
			continue
		}
		if st := ch.store.Stats(ctx); st.QueuedJobs > 0 || st.Dirty {
			return true
		}
	}
	return false
}

// repairStores repairs the everyone store, then every channel's: those
// that need it, or all of them (all: after an unclean start).
func (n *Node) repairStores(ctx context.Context, all bool) error {
	var errs []error
	if all || n.store.Stats(ctx).Dirty {
		if err := n.store.Repair(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ch := range n.chans.all() {
		if !all && !ch.store.Stats(ctx).Dirty {
			continue
		}
		if err := ch.store.Repair(ctx); err != nil {
			errs = append(errs, fmt.Errorf("channel %s: %w", ch.name, err))
		}
	}
	return errors.Join(errs...)
}

// Check verifies the store (and repairs it: see repairLoop and
// crdt.Store.Check).
func (n *Node) Check(ctx context.Context, repair bool) (*crdt.CheckReport, error) {
	if !repair {
		return n.store.Check(ctx, crdt.CheckOptions{})
	}
	return n.store.Check(ctx, n.checkOptions(true))
}

// checkOptions: asked by a person (explicit), an office declares blocks
// that no connected peer has lost for good.
func (n *Node) checkOptions(explicit bool) crdt.CheckOptions {
	opts := crdt.CheckOptions{Repair: true}
	if n.net != nil {
		opts.Fetch = n.fetchBlocks
	}
	opts.DropLost = func(ctx context.Context, missing []cid.Cid) bool {
		if n.cfg.Role == RoleOffice && explicit {
			return true
		}
		return n.store.DeclaredLost(ctx, missing)
	}
	opts.Declare = n.cfg.Role == RoleOffice && explicit
	return opts
}

// fetchBlocks asks connected peers for blocks (bitswap), each bounded.
func (n *Node) fetchBlocks(ctx context.Context, missing []cid.Cid) error {
	if n.net == nil || len(n.net.host.Network().Peers()) == 0 {
		return nil
	}
	dag := n.dag
	for _, c := range missing {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := dag.Get(fctx, c)
		cancel()
		if err != nil {
			n.log.Info("missing block not found on peers", "block", c, "err", err)
		}
	}
	return nil
}
