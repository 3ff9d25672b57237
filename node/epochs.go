package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
)

// Compaction: an office starts a new epoch of history (crdt.Store.Compact),
// every other node moves to it when it hears of it (the store does that by
// itself), and each node then frees the disk the old epoch used. See
// docs/merge-rules.md, "Compaction".

// DefaultCompactCheck is how often an office checks its compaction policy.
const DefaultCompactCheck = 10 * time.Minute

// minCompactWrites: the history-ratio policy leaves smaller epochs alone.
const minCompactWrites = 1000

// ErrNotOffice: only an office node compacts.
var ErrNotOffice = errors.New("only an office node compacts")

// Compact starts a new epoch from this node's state (an office only), drops
// the old one and frees the disk.
func (n *Node) Compact(ctx context.Context) (apijson.CompactResult, error) {
	var res apijson.CompactResult
	if n.cfg.Role != RoleOffice {
		return res, api.BadRequest(fmt.Errorf("compact: %w (this node is a %s)", ErrNotOffice, n.cfg.Role))
	}
	start := time.Now()
	res.StoreBefore = storeSize(n.cfg.Dir)
	rep, err := n.store.Compact(ctx)
	if err != nil {
		return res, err
	}
	// Each channel's store has its own epochs: compacted one after the
	// other (one that is busy syncing is left for the next time).
	for _, ch := range n.chans.all() {
		if res.Channels == nil {
			res.Channels = map[string]apijson.ChannelCompact{}
		}
		crep, err := ch.store.Compact(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return res, err
			}
			res.Channels[ch.name] = apijson.ChannelCompact{Error: err.Error()}
			n.log.Warn("compact: a channel was not compacted", "channel", ch.name, "err", err)
			continue
		}
		res.Channels[ch.name] = apijson.ChannelCompact{Epoch: crep.Epoch.String(), Seeded: crep.Seeded, Records: crep.Records}
	}
	if n.gc != nil {
		if _, err := n.gc.Reclaim(ctx); err != nil {
			n.log.Warn("compact: freeing the disk", "err", err)
		}
	}
	res.StoreAfter = storeSize(n.cfg.Dir)
	res.Epoch, res.Prev = rep.Epoch.String(), rep.Prev.String()
	res.Seeded, res.Records, res.Carried, res.Archived = rep.Seeded, rep.Records, rep.Carried, rep.Archived
	res.DroppedKeys, res.DroppedBlocks = rep.DroppedKeys, rep.DroppedBlocks
	res.TookMS = time.Since(start).Milliseconds()
	n.log.Info("compacted", "epoch", res.Epoch, "seeded", res.Seeded, "store_before", res.StoreBefore, "store_after", res.StoreAfter, "took", time.Since(start))
	return res, nil
}

// onEpoch runs once the store moved to a new epoch (compacted here or
// adopted from a peer): the disk is freed and the peers hear the new
// heads at once.
func (n *Node) onEpoch(rep crdt.EpochReport) {
	n.log.Info("moved to epoch", "epoch", rep.Epoch, "from", rep.Prev, "carried", rep.Carried, "dropped_keys", rep.DroppedKeys)
	// Grants and members may have come with the new epoch, without a
	// change of their records being observed: the channels held are
	// looked at again now, not at the next periodic look.
	n.channelsChanged()
	if n.cfg.Role == RoleOffice {
		// A misplaced record may come with the new epoch (carried from
		// the old one) without a change of it being observed.
		n.moves.rescan()
	}
	n.life.Go(func(ctx context.Context) {
		if n.gc != nil {
			if _, err := n.gc.Reclaim(ctx); err != nil && ctx.Err() == nil {
				n.log.Warn("freeing the disk after an epoch change", "err", err)
			}
		}
	})
	n.life.Go(func(ctx context.Context) {
		if n.netUp() {
			n.net.heads.ExchangeAll(ctx)
		}
	})
}

// epochStatus is the epoch part of Status.
func (n *Node) epochStatus() *apijson.Epoch {
	st := n.store.EpochStatus()
	e := &apijson.Epoch{Epoch: st.Current.String(), Number: st.Current.Number, Adopting: st.Adopting, LastError: st.LastError}
	if st.Info != nil {
		e.StartedAt, e.StartedBy = st.Info.At, st.Info.By
	}
	if st.Heard.Number > 0 || st.Heard.ID != "" {
		e.Later = st.Heard.String()
	}
	return e
}

// compactLoop applies the office's compaction policy (compact_every,
// compact_history_ratio in config.yaml).
func (n *Node) compactLoop(ctx context.Context) {
	every := n.cfg.CompactCheck
	if every <= 0 {
		every = DefaultCompactCheck
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	started := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		why := n.compactDue(ctx, started)
		if why == "" {
			continue
		}
		res, err := n.Compact(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, crdt.ErrBusy):
			n.log.Info("compaction due but the store is syncing; tried again later", "why", why)
		case err != nil:
			n.log.Warn("compaction failed", "why", why, "err", err)
		default:
			n.log.Info("compaction by policy", "why", why, "epoch", res.Epoch, "store_before", res.StoreBefore, "store_after", res.StoreAfter)
		}
	}
}

// compactDue says why the policy asks for a compaction now ("" if not).
func (n *Node) compactDue(ctx context.Context, started time.Time) string {
	if n.cfg.CompactEvery > 0 {
		since := n.epochSince(ctx, started)
		if time.Since(since) >= n.cfg.CompactEvery {
			return fmt.Sprintf("the epoch is older than %s", n.cfg.CompactEvery)
		}
	}
	if n.cfg.CompactRatio > 0 {
		h, err := n.store.HistorySize(ctx)
		least := n.cfg.compactMinWrites
		if least <= 0 {
			least = minCompactWrites
		}
		if err == nil && h.Writes >= least && h.Ratio() >= n.cfg.CompactRatio {
			return fmt.Sprintf("history holds %.1f writes per visible one (policy: %g)", h.Ratio(), n.cfg.CompactRatio)
		}
	}
	return ""
}

// epoch0Key holds when this node first applied compact_every in the first
// epoch (which has no start time of its own), so that restarts do not
// reset the age.
var epoch0Key = ds.NewKey("/ferry/local/epoch0-since")

// epochSince is when the current epoch started, as the age policy counts.
func (n *Node) epochSince(ctx context.Context, fallback time.Time) time.Time {
	if info := n.store.EpochInfo(); info != nil {
		return info.At
	}
	if b, err := n.guard.Get(ctx, epoch0Key); err == nil {
		if t, err := time.Parse(time.RFC3339Nano, string(b)); err == nil {
			return t
		}
	}
	if err := n.guard.Put(ctx, epoch0Key, []byte(fallback.UTC().Format(time.RFC3339Nano))); err != nil {
		n.log.Warn("compaction policy: recording the start of the first epoch", "err", err)
	}
	return fallback
}

// storeSize is the size of the data dir's store on disk.
func storeSize(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(filepath.Join(dir, datadir.StoreDir), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}
