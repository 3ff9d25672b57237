package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/diskfault"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/disk"
	"github.com/ferry-crm/ferry/node/enrol"
	"github.com/ferry-crm/ferry/node/p2p"
)

// storeLockWait is how long a node waits for a CLI command that holds the
// store (a command opens it in-process when no node runs; `ferry list` of a
// large store holds it for seconds).
const storeLockWait = 2 * time.Minute

// openDataDir opens the badger store of the data dir and what sits on it:
// the write guard, the disk reserve, an injected fault, the blockstore.
// unclean: the last run did not close cleanly.
func (n *Node) openDataDir(ctx context.Context) (unclean bool, err error) {
	wait := time.Duration(0)
	if n.cfg.Network {
		wait = storeLockWait
	}
	if n.base, err = datadir.OpenStoreWait(ctx, n.cfg.Dir, wait); err != nil {
		return false, fmt.Errorf("start node: %w", err)
	}
	if unclean, err = datadir.MarkOpen(n.cfg.Dir); err != nil {
		return false, fmt.Errorf("start node: %w", err)
	}
	reserve := disk.DefaultReserve
	if n.cfg.DiskReserve != nil {
		reserve = *n.cfg.DiskReserve
	}
	n.disk = disk.NewWatch(n.cfg.Dir, reserve)
	// Every write goes through the guard: badger's value log must not go
	// on after a write that failed part-way.
	n.guard = datadir.NewGuard(n.base, n.log)
	if path := os.Getenv(disk.FaultFullEnv); path != "" {
		n.fault = diskfault.Wrap(n.guard)
		n.fault.FullWhileExists(path)
		n.log.Warn("fault injection: every write fails while a file exists", "env", disk.FaultFullEnv, "path", path)
	}
	n.bstore = datadir.NewReportingBlockstore(datadir.NewBlockstore(n.datastore()), n.blockWriteFailed)
	n.dag = p2p.NewOfflineDAGService(n.bstore)
	return unclean, nil
}

// datastore is where the node writes: the guard, or the fault injected
// over it (every write fails while a file exists).
func (n *Node) datastore() ds.Batching {
	if n.fault != nil {
		return n.fault
	}
	return n.guard
}

// blockWriteFailed: a block that cannot be written (a full disk) leaves a
// merge undone; the store is told, so that it knows it needs repair.
// Bitswap may write blocks before the store is open: it reads storeReady.
func (n *Node) blockWriteFailed(err error) {
	if st := n.storeReady.Load(); st != nil {
		st.WriteFailed("block", err)
	}
}

// openStore opens the crdt store over the data dir (and, with network,
// over bitswap and the gated broadcaster), then starts the repair loop.
func (n *Node) openStore(ctx context.Context, unclean bool) error {
	n.unclean = unclean
	opts := n.storeOptions()
	userChange := opts.OnChange
	opts.OnChange = func(collection, escapedID string) {
		n.changed(collection, escapedID)
		if userChange != nil {
			userChange(collection, escapedID)
		}
	}
	var err error
	if n.net != nil {
		n.store, err = crdt.New(ctx, n.datastore(), n.dag, n.net.gate, opts)
	} else {
		n.store, err = crdt.New(ctx, n.datastore(), n.dag, nil, opts)
	}
	if err != nil {
		return err
	}
	n.storeReady.Store(n.store)
	n.router = crdt.NewRouter(n.store)
	if n.cfg.Role == RoleOffice || !n.cfg.secured() {
		n.router.SetOpener(n.ensureChannel)
	}
	dirty := unclean || n.store.Stats(ctx).Dirty
	if dirty {
		n.log.Warn("store was not closed cleanly, or a merge failed: re-walking the DAG")
	}
	n.acks = newAckTracker(ctx, n, n.store, n.bstore, officeHeadsKey)
	n.life.Go(func(ctx context.Context) { n.repairLoop(ctx, dirty) })
	return nil
}

// storeOptions are the crdt options of every store of the node (the
// everyone store and each channel's), before what is each store's own.
func (n *Node) storeOptions() crdt.Options {
	opts := n.cfg.Store
	opts.Writer = n.self.String()
	opts.Logger = n.log
	opts.Recover = n.unclean
	opts.Journal = len(n.cfg.Workflows) > 0
	opts.CheckRoom = n.disk.CheckRoom
	opts.HasBlock = n.bstore.Has
	opts.DropPrefix = func(_ context.Context, prefix string) error { return n.guard.DropPrefix(prefix) }
	if n.cfg.secured() {
		opts.Trust = enrol.NewTrust(n.key, n.cfg.Founder)
	}
	userEpoch := opts.OnEpoch
	opts.OnEpoch = func(rep crdt.EpochReport) {
		n.onEpoch(rep)
		if userEpoch != nil {
			userEpoch(rep)
		}
	}
	return opts
}

// recordNodeInfo writes this node's name and role into _nodes. On a full
// disk a node that has written before still starts (to be read, and to
// merge once there is room); a node that never wrote must not open its
// gate without a head of its own.
func (n *Node) recordNodeInfo(ctx context.Context) error {
	err := n.store.SetNodeInfo(ctx, n.cfg.Name, n.cfg.Role)
	if err == nil {
		return nil
	}
	if !errors.Is(err, crdt.ErrNotWritten) || len(n.store.Stats(ctx).Heads) == 0 {
		return err
	}
	n.log.Warn("could not record this node's name and role; starting anyway", "err", err)
	return nil
}
