package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Clean sync makes a node an exact copy of a configured peer's state (the
// office's), the "clean sync" of offline CRM clients: the local store is
// discarded before the node connects (so nothing local is pushed), then the
// node starts empty, fetches every block from the peer in bulk, merges them
// and waits until its digest equals the peer's. The node must not be
// running. Local edits that no office holds (going by the office heads this
// node last heard) are refused unless forced.

// ErrUnackedEdits: clean sync would discard edits no office holds.
var ErrUnackedEdits = errors.New("local edits are not held by any office yet")

// CleanSyncProgress reports a clean sync's progress.
type CleanSyncProgress struct {
	Phase     string // "connecting", "fetching", "merging", "done"
	Peer      peer.ID
	Blocks    int // received so far
	Total     int // announced by the peer (0 until known)
	Bytes     int64
	QueuedDAG int
}

// CleanSyncResult says what a clean sync did.
type CleanSyncResult struct {
	Peer      peer.ID
	Blocks    int64
	Discarded int // unacknowledged local edits discarded (with force)
	Digest    string
	Took      time.Duration
}

// CheckUnacked opens the stopped node of cfg.Dir without network and
// returns its unacknowledged local edits (for clean sync's refusal).
func CheckUnacked(ctx context.Context, cfg Config) (Unacked, error) {
	cfg.Network = false
	n, err := Start(ctx, cfg)
	if err != nil {
		return Unacked{}, err
	}
	defer n.Close()
	return n.acks.unacked(ctx)
}

// CleanSync discards the local store of cfg.Dir (identity and config stay)
// and makes it a copy of the first configured peer that answers. force
// allows discarding unacknowledged local edits. progress may be nil.
func CleanSync(ctx context.Context, cfg Config, force bool, progress func(CleanSyncProgress)) (CleanSyncResult, error) {
	start := time.Now()
	var res CleanSyncResult
	if progress == nil {
		progress = func(CleanSyncProgress) {}
	}
	if len(cfg.Peers) == 0 {
		return res, errors.New("clean sync: no peer configured to copy from (init with --peer)")
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "store")); err == nil {
		u, err := CheckUnacked(ctx, cfg)
		if err != nil {
			return res, fmt.Errorf("clean sync: %w", err)
		}
		if u.Count > 0 && !force {
			return res, fmt.Errorf("clean sync: %w: %d, the oldest from %s; sync with the office first, or --force to discard them",
				ErrUnackedEdits, u.Count, u.Oldest.Format(time.RFC3339))
		}
		res.Discarded = u.Count
		if err := os.RemoveAll(filepath.Join(cfg.Dir, "store")); err != nil {
			return res, fmt.Errorf("clean sync: discard the local store: %w", err)
		}
		if err := markClosed(cfg.Dir); err != nil {
			return res, err
		}
	}
	cfg.Network, cfg.Offline = true, false
	n, err := Start(ctx, cfg)
	if err != nil {
		return res, fmt.Errorf("clean sync: %w", err)
	}
	defer n.Close()

	var configured []peer.ID
	for _, a := range cfg.Peers {
		if info, err := peer.AddrInfoFromP2pAddr(a); err == nil {
			configured = append(configured, info.ID)
		}
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		p, phase := n.cleanSyncState(configured)
		cp := CleanSyncProgress{Phase: phase, Peer: p}
		if bs := n.blocks.Stats(); bs.InProgress {
			cp.Phase, cp.Blocks, cp.Total, cp.Bytes = "fetching", bs.Current.Blocks, bs.Current.Total, bs.Current.Bytes
		}
		cp.QueuedDAG = n.store.Stats(ctx).QueuedJobs
		if p != "" && cp.Phase == "merging" {
			diff, err := n.Diff(ctx, p)
			if err == nil && diff.Identical {
				res.Peer, res.Digest = p, diff.Digest
				res.Blocks = n.blocks.Stats().FetchedBlocks
				res.Took = time.Since(start)
				cp.Phase = "done"
				progress(cp)
				return res, nil
			}
		}
		progress(cp)
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("clean sync: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// cleanSyncState finds the configured peer to copy from: connected and
// exchanged heads with.
func (n *Node) cleanSyncState(configured []peer.ID) (peer.ID, string) {
	for _, p := range configured {
		if n.host.Network().Connectedness(p) != network.Connected {
			continue
		}
		if _, ok := n.heads.LastExchange(p); ok {
			return p, "merging"
		}
		return p, "connecting"
	}
	return "", "connecting"
}
