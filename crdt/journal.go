package crdt

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/ferry-crm/ferry/internal/dsbatch"
)

// The change journal (Options.Journal) is how a node acts on every merged
// change exactly as often as it is merged: each write of a user collection
// that go-ds-crdt merges here, this node's own or a peer's, however late,
// leaves a journal entry under JournalPrefix + its write key, put in the
// same datastore batch as the write's element. The entry is on disk exactly
// when the write is: a crash (kill -9) between the merge and its consumer
// cannot lose a change. The consumer (node/workflow) reads entries with
// Journal and deletes each one in the batch that records what it decided.
//
// A write carried by several blocks, or carried again into a new epoch by
// a node that was away, is journalled again: consumers deduplicate by op
// id. Writes only seeded into an epoch built elsewhere (a compaction by
// another office) are not journalled.

// JournalPrefix is where journal entries live, outside every epoch's
// namespace.
var JournalPrefix = ds.NewKey("/ferry/local/journal")

// JournalEntry is one merged write not yet consumed.
type JournalEntry struct {
	Collection string
	ID         string
	Op         OpID
	// Key is the entry's datastore key: delete it once consumed.
	Key ds.Key
}

// journalOps returns the journal entries for the element writes among ops.
func (o *observedStore) journalOps(ops []dsbatch.Op) []dsbatch.Op {
	if !o.journal {
		return nil
	}
	var out []dsbatch.Op
	for _, op := range ops {
		if op.Delete {
			continue
		}
		if e, ok := o.elementOf(op.Key); ok {
			// Facts of dead ops a node writes when it moves to a new
			// epoch (KeepField) change no value, nor does an office's
			// move of a record between channels: nothing to act on.
			if kp, err := parseOpKey(e.key); err == nil {
				if w, err := decodeWrite(kp, op.Value); err == nil && (onlyKeeps(w) || onlyMoves(w)) {
					continue
				}
			}
			if k, ok := journalKey(e.key); ok {
				out = append(out, dsbatch.Op{Key: k, Value: []byte{}})
			}
		}
	}
	return out
}

// journalKey is the journal key of a write key, false for internal
// collections.
func journalKey(writeKey string) (ds.Key, bool) {
	if strings.HasPrefix(writeKey, "/_") {
		return ds.Key{}, false
	}
	return ds.RawKey(JournalPrefix.String() + writeKey), true
}

// Journal returns up to limit journal entries, in key order. Entries that
// do not parse are deleted.
func (s *Store) Journal(ctx context.Context, limit int) ([]JournalEntry, error) {
	res, err := s.base.Query(ctx, query.Query{Prefix: JournalPrefix.String() + "/", KeysOnly: true, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	defer res.Close()
	var out []JournalEntry
	for r := range res.Next() {
		if r.Error != nil {
			return nil, fmt.Errorf("read journal: %w", r.Error)
		}
		kp, err := parseOpKey(strings.TrimPrefix(r.Key, JournalPrefix.String()))
		var id string
		if err == nil {
			id, err = UnescapeID(kp.EscapedID)
		}
		if err != nil {
			s.log.Warn("dropping a malformed journal entry", "key", r.Key, "err", err)
			if err := s.base.Delete(ctx, ds.RawKey(r.Key)); err != nil {
				return nil, fmt.Errorf("read journal: %w", err)
			}
			continue
		}
		out = append(out, JournalEntry{Collection: kp.Collection, ID: id, Op: kp.Op, Key: ds.RawKey(r.Key)})
	}
	return out, nil
}

// Change is what one write did to its record, as of that write: the
// record's values from every write older than it (in op order, the order
// every replica agrees on), and with it applied.
type Change struct {
	Collection string
	ID         string
	Op         OpID
	// Event is create, update or delete.
	Event string
	// Before and After are the record's values (nil: the record did not
	// exist / was deleted).
	Before, After map[string]any
	// Fields are the fields the write gave a value (or cleared).
	Fields []string
	// Changed are the fields whose value differs between Before and After.
	Changed []string
	// Ignored: the write failed the trust checks (docs/security.md); it
	// changed nothing and fires nothing.
	Ignored bool
}

// Events of a Change.
const (
	EventCreate = "create"
	EventUpdate = "update"
	EventDelete = "delete"
)

// ChangeOf reconstructs what write op did to a record from the record's
// history. found is false when the write's value is not (yet) on this node
// or, when complete, some write it replaced is not (a branch merges from
// its head down; after a compaction the replaced values may be gone for
// good: ask again without complete).
func (s *Store) ChangeOf(ctx context.Context, collection, id string, op OpID, complete bool) (ch *Change, found bool, err error) {
	hist, err := s.History(ctx, collection, id, "")
	if err != nil {
		return nil, false, fmt.Errorf("change %s of %s/%s: %w", op, collection, id, err)
	}
	// Writes the trust checks ignore (a forged signature, a writer not a
	// member or revoked, a role not allowed) change nothing: they are left
	// out, and a change made only of them is marked Ignored.
	eid, err := EscapeID(id)
	if err != nil {
		return nil, false, fmt.Errorf("change %s of %s/%s: %w", op, collection, id, err)
	}
	rops, err := s.readRecord(ctx, collection, eid)
	if err != nil {
		return nil, false, fmt.Errorf("change %s of %s/%s: %w", op, collection, id, err)
	}
	if len(rops.ignored) > 0 {
		ignored := map[string]bool{}
		for _, ig := range rops.ignored {
			ignored[ig.Field+"/"+ig.Op.String()] = true
		}
		kept := hist[:0:0]
		dropped := false
		for _, e := range hist {
			if ignored[e.Field+"/"+e.Op.String()] {
				dropped = dropped || e.Op == op
				continue
			}
			kept = append(kept, e)
		}
		hist = kept
		if dropped && !slices.ContainsFunc(hist, func(e HistoryEntry) bool { return e.Op == op }) {
			return &Change{Collection: collection, ID: id, Op: op, Ignored: true}, true, nil
		}
	}
	var before map[string]any
	apply := func(state map[string]any, e HistoryEntry) map[string]any {
		if e.Field == DeleteField {
			return nil
		}
		if state == nil {
			state = map[string]any{}
		}
		if e.Value == nil {
			delete(state, e.Field)
		} else {
			state[e.Field] = e.Value
		}
		return state
	}
	var mine []HistoryEntry
	here := map[string]bool{} // ops whose value is on this node
	for _, e := range hist {
		if e.Value != nil || e.Block.Defined() || e.Compacted {
			here[e.Field+"/"+e.Op.String()] = true
		}
	}
	for _, e := range hist {
		switch {
		case e.Op == op:
			if e.Value != nil || e.Block.Defined() || e.Compacted {
				mine = append(mine, e)
			}
		case op.Newer(e.Op):
			if e.Value == nil && !e.Block.Defined() && !e.Compacted {
				continue // its value is not here
			}
			before = apply(before, e)
		}
	}
	if len(mine) == 0 {
		return nil, false, nil
	}
	// What the write replaced must be here too: go-ds-crdt merges a
	// branch from its head down, so a write can be merged before the
	// writes it saw.
	for _, e := range mine {
		for _, ref := range e.Supersedes {
			if complete && !here[ref] {
				return nil, false, nil
			}
		}
	}
	var after map[string]any
	if before != nil {
		after = make(map[string]any, len(before))
		for k, v := range before {
			after[k] = v
		}
	}
	ch = &Change{Collection: collection, ID: id, Op: op, Before: before}
	seen := map[string]bool{}
	for _, e := range mine {
		if seen[e.Field] {
			continue // carried by several blocks
		}
		seen[e.Field] = true
		if e.Field != DeleteField {
			ch.Fields = append(ch.Fields, e.Field)
		}
		after = apply(after, e)
		if e.Field == DeleteField {
			after = nil
		}
	}
	ch.After = after
	switch {
	case after == nil:
		ch.Event = EventDelete
	case before == nil:
		ch.Event = EventCreate
	default:
		ch.Event = EventUpdate
	}
	keys := map[string]bool{}
	for k := range before {
		keys[k] = true
	}
	for k := range after {
		keys[k] = true
	}
	for k := range keys {
		if before[k] != after[k] {
			ch.Changed = append(ch.Changed, k)
		}
	}
	sort.Strings(ch.Changed)
	return ch, true, nil
}
