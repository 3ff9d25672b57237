package crdt

import (
	"context"

	cid "github.com/ipfs/go-cid"
)

// What belongs to the network as a whole lives in the everyone store: the
// methods below are the everyone store's.

// Epoch returns the everyone store's epoch (a channel's: Channel(c).Epoch).
func (r *Router) Epoch() Epoch { return r.all.Epoch() }

// Stats returns the everyone store's statistics.
func (r *Router) Stats(ctx context.Context) Stats { return r.all.Stats(ctx) }

// Heads returns the everyone store's heads.
func (r *Router) Heads(ctx context.Context) ([]cid.Cid, error) { return r.all.Heads(ctx) }

// Digest returns the everyone store's digest (a channel's:
// Channel(c).Digest).
func (r *Router) Digest(ctx context.Context) (Digest, error) { return r.all.Digest(ctx) }

// HistorySize measures the everyone store's history.
func (r *Router) HistorySize(ctx context.Context) (HistorySize, error) { return r.all.HistorySize(ctx) }

// Members returns the network's members.
func (r *Router) Members(ctx context.Context) ([]Member, error) { return r.all.Members(ctx) }

// Member returns one member.
func (r *Router) Member(ctx context.Context, id string) (Member, bool, error) {
	return r.all.Member(ctx, id)
}

// AddMember records a member (an office only).
func (r *Router) AddMember(ctx context.Context, id, name, role string) error {
	return r.all.AddMember(ctx, id, name, role)
}

// RevokeMember revokes a member (an office only).
func (r *Router) RevokeMember(ctx context.Context, id string) error {
	return r.all.RevokeMember(ctx, id)
}

// Nodes returns what each node says of itself.
func (r *Router) Nodes(ctx context.Context) (map[string]NodeInfo, error) { return r.all.Nodes(ctx) }

// SetNodeInfo records this node's name and role.
func (r *Router) SetNodeInfo(ctx context.Context, name, role string) error {
	return r.all.SetNodeInfo(ctx, name, role)
}

// Journal returns up to limit entries of the node's journal of merged
// writes (one journal for every store: see Store.Journal).
func (r *Router) Journal(ctx context.Context, limit int) ([]JournalEntry, error) {
	return r.all.Journal(ctx, limit)
}

// ChangeOf reconstructs the change a journal entry stands for, from the
// store that holds the record (see Store.ChangeOf).
func (r *Router) ChangeOf(ctx context.Context, collection, id string, op OpID, complete bool) (*Change, bool, error) {
	if r.routing(ctx, collection) == nil {
		return r.all.ChangeOf(ctx, collection, id, op, complete)
	}
	for _, s := range r.channelStores() {
		ch, found, err := s.ChangeOf(ctx, collection, id, op, complete)
		if err != nil || found {
			return ch, found, err
		}
	}
	return nil, false, nil
}
