package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	cid "github.com/ipfs/go-cid"
	badger "github.com/ipfs/go-ds-badger"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/heads"
	"github.com/ferry-crm/ferry/node/p2p"
	"github.com/ferry-crm/ferry/node/snapshot"
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
	Phase     string // "copying", "connecting", "fetching", "merging", "done"
	Entries   int    // copying: store entries received
	CopyBytes int64  // copying: bytes received
	Peer      peer.ID
	Blocks    int // received so far
	Total     int // announced by the peer (0 until known)
	Bytes     int64
	QueuedDAG int
}

// CleanSyncResult says what a clean sync did.
type CleanSyncResult struct {
	Peer peer.ID
	// Entries and Bytes were copied from the peer's store (a snapshot).
	Entries int
	Bytes   int64
	// Blocks were fetched afterwards (or all of them, without a snapshot).
	Blocks    int64
	Discarded int // unacknowledged local edits discarded (with force)
	Digest    string
	Took      time.Duration
}

// CheckUnacked opens the stopped node of cfg.Dir without network and
// returns its unacknowledged local edits (for clean sync's refusal).
func CheckUnacked(ctx context.Context, cfg Config) (apijson.Unacked, error) {
	cfg.Network = false
	n, err := Start(ctx, cfg)
	if err != nil {
		return apijson.Unacked{}, err
	}
	defer n.Close()
	return n.unackedEverywhere(ctx)
}

// unackedEverywhere counts the unacknowledged edits of every store on
// disk: the everyone store, the channels held, and those being left or no
// longer wanted (still on disk until handed over and purged).
func (n *Node) unackedEverywhere(ctx context.Context) (apijson.Unacked, error) {
	u, err := n.acks.unacked(ctx)
	if err != nil {
		return u, err
	}
	add := func(c apijson.Unacked) {
		u.Count += c.Count
		u.Known = u.Known && c.Known
		if !c.Oldest.IsZero() && (u.Oldest.IsZero() || c.Oldest.Before(u.Oldest)) {
			u.Oldest = c.Oldest
		}
	}
	for _, ch := range n.chans.all() {
		c, err := ch.acks.unacked(ctx)
		if err != nil {
			return u, fmt.Errorf("channel %s: %w", ch.name, err)
		}
		add(c)
	}
	disk, err := n.channelsOnDisk(ctx)
	if err != nil {
		return u, err
	}
	n.chans.mu.Lock()
	defer n.chans.mu.Unlock()
	for name := range disk {
		if n.chans.get(name) != nil {
			continue
		}
		ch, err := n.openChannelLocked(ctx, name, false)
		if err != nil {
			return u, fmt.Errorf("channel %s: %w", name, err)
		}
		c, err := ch.acks.unacked(ctx)
		_ = n.closeChannel(ch)
		if err != nil {
			return u, fmt.Errorf("channel %s: %w", name, err)
		}
		add(c)
	}
	return u, nil
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
	if _, err := os.Stat(filepath.Join(cfg.Dir, datadir.StoreDir)); err == nil {
		u, err := CheckUnacked(ctx, cfg)
		if err != nil {
			return res, fmt.Errorf("clean sync: %w", err)
		}
		if u.Count > 0 && !force {
			return res, fmt.Errorf("clean sync: %w: %d, the oldest from %s; sync with the office first, or --force to discard them",
				ErrUnackedEdits, u.Count, u.Oldest.Format(time.RFC3339))
		}
		res.Discarded = u.Count
		if err := os.RemoveAll(filepath.Join(cfg.Dir, datadir.StoreDir)); err != nil {
			return res, fmt.Errorf("clean sync: discard the local store: %w", err)
		}
		if err := datadir.MarkClosed(cfg.Dir); err != nil {
			return res, err
		}
	}
	var err error
	if res.Entries, res.Bytes, err = copySnapshot(ctx, cfg, progress); err != nil {
		// Fall back to replaying the DAG: start from an empty store again.
		cfg.Logger.Warn("clean sync: no snapshot copy, replaying the office's DAG instead", "err", err)
		if err := os.RemoveAll(filepath.Join(cfg.Dir, datadir.StoreDir)); err != nil {
			return res, fmt.Errorf("clean sync: %w", err)
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
		if bs := n.net.blocks.Stats(); bs.InProgress {
			cp.Phase, cp.Blocks, cp.Total, cp.Bytes = "fetching", bs.Current.Blocks, bs.Current.Total, bs.Current.Bytes
		}
		st := n.store.Stats(ctx)
		cp.QueuedDAG = st.QueuedJobs
		if p != "" && cp.Phase == "merging" && st.QueuedJobs == 0 && n.sameHeadsAs(n.net.heads, p, st.Heads) && n.channelsSameAs(ctx, p) {
			res.Peer = p
			res.Blocks = n.net.blocks.Stats().FetchedBlocks
			res.Took = time.Since(start)
			if d, ok, err := n.store.TryDigest(ctx); err == nil && ok {
				res.Digest = d.String()
			}
			cp.Phase = "done"
			progress(cp)
			return res, nil
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
		if n.net.host.Network().Connectedness(p) != network.Connected {
			continue
		}
		if _, ok := n.net.heads.LastExchange(p); ok {
			return p, "merging"
		}
		return p, "connecting"
	}
	return "", "connecting"
}

// copySnapshot copies the first configured peer that answers into the
// (empty) store of cfg.Dir, over a short-lived host with the node's
// identity. The node itself is not running.
func copySnapshot(ctx context.Context, cfg Config, progress func(CleanSyncProgress)) (int, int64, error) {
	key, err := datadir.LoadOrCreateIdentity(filepath.Join(cfg.Dir, datadir.IdentityFile))
	if err != nil {
		return 0, 0, err
	}
	h, err := p2p.NewHost(p2p.HostConfig{Key: key, PSK: cfg.SwarmKey})
	if err != nil {
		return 0, 0, err
	}
	defer h.Close()
	var errs []error
	for _, a := range cfg.Peers {
		info, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = h.Connect(cctx, *info)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		base, err := datadir.OpenStore(cfg.Dir)
		if err != nil {
			return 0, 0, err
		}
		layout := cfg.snapshotLayout()
		if cfg.Role != RoleOffice && cfg.Channels != nil {
			// Granted but not taken offline: not stored (the office sends
			// every channel granted; the subscription is this laptop's).
			layout.Skip = func(channel string) bool { return !slices.Contains(cfg.Channels, channel) }
		}
		entries, bytes, err := snapshot.Fetch(ctx, h, info.ID, base, layout, func(entries int, bytes int64) {
			progress(CleanSyncProgress{Phase: "copying", Peer: info.ID, Entries: entries, CopyBytes: bytes})
		})
		if err == nil {
			dropWriteAheadCopy(ctx, cfg, base)
		}
		if cerr := base.Close(); err == nil {
			err = cerr
		}
		return entries, bytes, err
	}
	return 0, 0, fmt.Errorf("no configured peer answered: %w", errors.Join(errs...))
}

// dropWriteAheadCopy frees the second copy of a snapshot a store holds
// once it is written: badger's value log holds every value written, and
// its current file (up to 64 MiB, often the whole copy) is one GC never
// touches. A new file is started and GC deletes the old one (the values
// live in the tables). The copy is whole without it: a failure only costs
// disk.
func dropWriteAheadCopy(ctx context.Context, cfg Config, base *badger.Datastore) {
	g := datadir.NewGuard(base, cfg.Logger)
	if err := g.RotateValueLog(ctx); err != nil {
		cfg.Logger.Warn("clean sync: the copy's write-ahead log stays on disk until GC", "err", err)
		return
	}
	gc := datadir.StartGC(g, cfg.Dir, datadir.GCOptions{Idle: time.Hour, Interval: time.Hour, Logger: cfg.Logger})
	defer gc.Close()
	if _, err := gc.Collect(ctx); err != nil {
		cfg.Logger.Warn("clean sync: the copy's write-ahead log stays on disk until GC", "err", err)
	}
}

// channelsSameAs reports whether every channel held here has merged what
// p holds of it (its heads, as p last announced them).
func (n *Node) channelsSameAs(ctx context.Context, p peer.ID) bool {
	for _, ch := range n.chans.all() {
		if ch.heads == nil {
			return false
		}
		if sup, err := n.net.host.Peerstore().SupportsProtocols(p, channelProtocol(ch.name, "heads")); err == nil && len(sup) == 0 {
			continue // p does not hold this channel
		}
		st := ch.store.Stats(ctx)
		if st.QueuedJobs > 0 || !n.sameHeadsAs(ch.heads, p, st.Heads) {
			return false
		}
	}
	return true
}

// sameHeadsAs reports whether heads equal the heads p last announced: with
// every block merged, the two nodes then hold the same DAG, so the same
// state.
func (n *Node) sameHeadsAs(svc *heads.Service, p peer.ID, heads []cid.Cid) bool {
	theirs := svc.PeerHeads(p)
	if theirs == nil || len(theirs) != len(heads) {
		return false
	}
	set := make(map[cid.Cid]bool, len(heads))
	for _, h := range heads {
		set[h] = true
	}
	for _, h := range theirs {
		if !set[h] {
			return false
		}
	}
	return true
}
