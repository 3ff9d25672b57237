package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-crm/ferry/crdt"
)

// Moves (docs/channels.md, "A record changing channel"): when a record's
// routing field names another channel than the one holding it, an office
// moves it (crdt.Store.Move): it copies the record into the new channel,
// then hides it in the old one. The office's move loop is told of every
// change in a channel store, and scans every channel at start and every
// moveScan, so that a move an office missed (down, or killed mid-move) is
// made later: a move is idempotent.

// moveScan is how often an office looks for misplaced records in every
// channel, besides the changes it is told of.
const moveScan = 5 * time.Minute

// moveRetry is how long a move that failed waits before it is tried again.
const moveRetry = 5 * time.Second

// moveKey names a record of a channel store.
type moveKey struct{ channel, collection, eid string }

// moveQueue holds the records to look at.
type moveQueue struct {
	mu      sync.Mutex
	pending map[moveKey]bool
	wake    chan struct{}
	// scan asks for a scan of every channel (after an epoch change: a
	// store's new epoch replaces its state without a change per record).
	scan atomic.Bool
}

// rescan asks the move loop to scan every channel now.
func (q *moveQueue) rescan() {
	q.scan.Store(true)
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *moveQueue) add(k moveKey) {
	q.mu.Lock()
	if q.pending == nil {
		q.pending = map[moveKey]bool{}
	}
	q.pending[k] = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *moveQueue) take() []moveKey {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]moveKey, 0, len(q.pending))
	for k := range q.pending {
		out = append(out, k)
	}
	clear(q.pending)
	return out
}

// movesChanged is told of a change of a routed record in a channel store
// (from merge hooks: it does not block).
func (n *Node) movesChanged(channel, collection, escapedID string) {
	if n.cfg.Role != RoleOffice || len(collection) == 0 || collection[0] == '_' {
		return
	}
	n.moves.add(moveKey{channel, collection, escapedID})
}

// moveLoop moves the misplaced records an office hears of.
func (n *Node) moveLoop(ctx context.Context) {
	scan := time.NewTicker(moveScan)
	defer scan.Stop()
	n.scanMisplaced(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-scan.C:
			n.scanMisplaced(ctx)
		case <-n.moves.wake:
			if n.moves.scan.Swap(false) {
				n.scanMisplaced(ctx)
			}
		}
		failed := false
		for _, k := range n.moves.take() {
			if err := n.moveIfMisplaced(ctx, k); err != nil && ctx.Err() == nil {
				if !errors.Is(err, errMerging) {
					n.log.Warn("moving a record to its channel", "channel", k.channel, "collection", k.collection, "id", k.eid, "err", err)
				}
				n.moves.mu.Lock()
				n.moves.pending[k] = true
				n.moves.mu.Unlock()
				failed = true
			}
		}
		if failed {
			select {
			case <-ctx.Done():
				return
			case <-time.After(moveRetry):
			}
			select {
			case n.moves.wake <- struct{}{}:
			default:
			}
		}
	}
}

// errMerging: a channel store is still merging blocks; a move waits.
var errMerging = errors.New("the channel is still merging blocks")

// channelMerging reports whether a channel store has blocks to merge, or
// is catching up in bulk.
func (n *Node) channelMerging(ch *channel) bool {
	if ch.store.Stats(n.life.Context()).QueuedJobs > 0 {
		return true
	}
	n.chans.mu.Lock()
	bs := ch.blocks
	n.chans.mu.Unlock()
	return bs != nil && bs.Stats().InProgress
}

// scanMisplaced queues every misplaced record of every channel held.
func (n *Node) scanMisplaced(ctx context.Context) {
	for _, ch := range n.chans.all() {
		err := ch.store.Misplaced(ctx, func(collection, id, _ string) error {
			eid, err := crdt.EscapeID(id)
			if err == nil {
				n.moves.add(moveKey{ch.name, collection, eid})
			}
			return nil
		})
		if err != nil && ctx.Err() == nil {
			n.log.Warn("looking for misplaced records", "channel", ch.name, "err", err)
		}
	}
	err := n.router.SplitRecords(ctx, func(collection, id string, channels []string) error {
		eid, err := crdt.EscapeID(id)
		if err == nil {
			n.moves.add(moveKey{channels[0], collection, eid})
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		n.log.Warn("looking for records created in two channels", "err", err)
	}
}

// joinSplit joins the copies of a record created with one id in several
// channels (by nodes that did not hold each other's copy), each shown at
// home: every copy moves into the first of those channels by name, so
// that every office joins them the same way; if the joined record's
// routing value names another channel, it then moves there like any
// other. Nothing is lost: a move carries every write, conflicts included.
func (n *Node) joinSplit(ctx context.Context, collection, id string) error {
	var home []*channel
	for _, ch := range n.chans.all() {
		ok, err := ch.store.AtHome(ctx, collection, id)
		if err != nil {
			return err
		}
		if ok {
			home = append(home, ch)
		}
	}
	if len(home) < 2 {
		return nil
	}
	slices.SortFunc(home, func(a, b *channel) int { return strings.Compare(a.name, b.name) })
	into := home[0]
	for _, from := range home[1:] {
		res, err := from.store.Move(ctx, into.store, collection, id)
		if err != nil {
			return fmt.Errorf("join the copies of a record created in channels %s and %s: %w", into.name, from.name, err)
		}
		n.log.Info("joined a record created in two channels", "collection", collection, "id", id, "from", from.name, "into", into.name, "writes", res.Copied)
	}
	// The joined record may belong elsewhere now.
	if eid, err := crdt.EscapeID(id); err == nil {
		n.moves.add(moveKey{into.name, collection, eid})
	}
	return nil
}

// moveIfMisplaced moves one record when its channel store says it should.
func (n *Node) moveIfMisplaced(ctx context.Context, k moveKey) error {
	ch := n.chans.get(k.channel)
	if ch == nil {
		return nil // left meanwhile
	}
	id, err := crdt.UnescapeID(k.eid)
	if err != nil {
		return nil
	}
	if n.channelMerging(ch) {
		// Its view of the record may lack writes still arriving (a bulk
		// catch-up brings the newest blocks first): looked at again once
		// they are merged.
		return errMerging
	}
	to, ok, err := ch.store.MisplacedRecord(ctx, k.collection, id)
	if err != nil {
		return err
	}
	if !ok {
		return n.joinSplit(ctx, k.collection, id)
	}
	dst, err := n.ensureChannel(ctx, to)
	if err != nil {
		return fmt.Errorf("channel %s: %w", to, err)
	}
	res, err := ch.store.Move(ctx, dst, k.collection, id)
	if err != nil {
		return err
	}
	n.log.Info("moved a record to its channel", "collection", k.collection, "id", id, "from", k.channel, "to", to, "writes", res.Copied)
	return nil
}
