package node

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/boxo/blockstore"
	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/heads"
)

// Acknowledgements: an edit made here is acknowledged once an office node
// holds the DAG block that carries it. An office node holds every block
// reachable from the heads it announced to us in a heads exchange, so the
// unacknowledged edits are this node's operations in blocks that are not
// reachable from the last heads of any office node. The office heads are
// kept in the store (outside the replicated namespace) across restarts.

var officeHeadsKey = ds.NewKey("/ferry/local/office-heads")

type ackTracker struct {
	n      *Node
	store  *crdt.Store // the store whose edits are counted
	bstore blockstore.Blockstore
	key    ds.Key // where the office heads are kept

	mu     sync.Mutex
	office map[string]officeHeads // office peer id -> its last heads
	cache  struct {
		key string
		val apijson.Unacked
	}
}

type officeHeads struct {
	Heads []string  `json:"heads"`
	At    time.Time `json:"at"`
}

func newAckTracker(ctx context.Context, n *Node, store *crdt.Store, bstore blockstore.Blockstore, key ds.Key) *ackTracker {
	a := &ackTracker{n: n, store: store, bstore: bstore, key: key, office: map[string]officeHeads{}}
	if data, err := n.guard.Get(ctx, key); err == nil {
		if err := json.Unmarshal(data, &a.office); err != nil {
			n.log.Warn("ignoring stored office heads", "err", err)
			a.office = map[string]officeHeads{}
		}
	} else if !errors.Is(err, ds.ErrNotFound) {
		n.log.Warn("reading stored office heads", "err", err)
	}
	return a
}

// heard records the heads a peer announced, when the peer is an office node.
func (a *ackTracker) heard(ctx context.Context, from peer.ID, payload []byte) {
	if a.n.roleOf(ctx, from) != RoleOffice {
		return
	}
	theirs, err := heads.Decode(payload)
	if err != nil {
		return
	}
	oh := officeHeads{At: time.Now().UTC()}
	for _, h := range theirs {
		oh.Heads = append(oh.Heads, h.String())
	}
	slices.Sort(oh.Heads)
	a.mu.Lock()
	a.office[from.String()] = oh
	data, err := json.Marshal(a.office)
	a.mu.Unlock()
	if err == nil {
		if err := a.n.guard.Put(ctx, a.key, data); err != nil {
			a.n.log.Warn("storing office heads", "err", err)
		}
	}
}

// unacked counts this node's operations in blocks no office node holds.
func (a *ackTracker) unacked(ctx context.Context) (apijson.Unacked, error) {
	if a.n.cfg.Role == RoleOffice {
		return apijson.Unacked{Known: true, AsOf: time.Now().UTC()}, nil
	}
	ours, err := a.store.Heads(ctx)
	if err != nil {
		return apijson.Unacked{}, err
	}
	a.mu.Lock()
	var officeCids []cid.Cid
	var res apijson.Unacked
	keyParts := []string{}
	for _, h := range ours {
		keyParts = append(keyParts, h.String())
	}
	for id, oh := range a.office {
		res.Known = true
		if oh.At.After(res.AsOf) {
			res.AsOf = oh.At
		}
		keyParts = append(keyParts, id+":"+strings.Join(oh.Heads, ","))
		for _, s := range oh.Heads {
			if c, err := cid.Decode(s); err == nil {
				officeCids = append(officeCids, c)
			}
		}
	}
	slices.Sort(keyParts)
	key := strings.Join(keyParts, ";")
	if a.cache.key == key {
		v := a.cache.val
		a.mu.Unlock()
		return v, nil
	}
	a.mu.Unlock()

	held := map[cid.Cid]bool{}
	if err := a.walk(ctx, officeCids, held, nil); err != nil {
		return apijson.Unacked{}, err
	}
	self := a.n.self.String()
	var oldest crdt.Timestamp
	err = a.walk(ctx, ours, held, func(raw []byte) {
		ops, err := crdt.BlockOps(raw)
		if err != nil {
			return
		}
		for _, op := range ops {
			if op.Op.Writer != self || op.Collection == crdt.NodesCollection {
				continue
			}
			res.Count++
			if oldest == 0 || op.Op.Time < oldest {
				oldest = op.Op.Time
			}
		}
	})
	if err != nil {
		return apijson.Unacked{}, err
	}
	if oldest != 0 {
		res.Oldest = oldest.Wall()
	}
	a.mu.Lock()
	a.cache.key, a.cache.val = key, res
	a.mu.Unlock()
	return res, nil
}

// walk visits every block reachable from roots that is not in seen (and
// marks it), calling fn with each block's raw bytes. Blocks missing locally
// are skipped (not fetched yet).
func (a *ackTracker) walk(ctx context.Context, roots []cid.Cid, seen map[cid.Cid]bool, fn func(raw []byte)) error {
	stack := slices.Clone(roots)
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[c] {
			continue
		}
		seen[c] = true
		blk, err := a.bstore.Get(ctx, c)
		if err != nil {
			continue
		}
		stack = append(stack, crdt.ReadBlock(c, blk.RawData()).Links...)
		if fn != nil {
			fn(blk.RawData())
		}
	}
	return nil
}
