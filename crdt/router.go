package crdt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/ferry-crm/ferry/schema"
)

// ErrChannelNotHeld: the record belongs to a channel this node does not
// hold (not granted, or not taken offline), so it can neither be read nor
// written here.
var ErrChannelNotHeld = errors.New("channel not held on this node")

// ErrOtherChannels: an operation on two records found them in different
// channels.
var ErrOtherChannels = errors.New("the records are in different channels")

// Router is what a node reads and writes through (docs/design/channels.md
// 2.5): its everyone store, which holds Ferry's own collections and every
// collection without routing, and one store per channel it holds. A write
// of a routed collection goes to the store that holds the record, or, for a
// new record, to the channel its routing field names; a read looks in
// every channel store held and shows a record once.
type Router struct {
	all *Store

	mu    sync.RWMutex
	chans map[string]*Store
	// open, if set, opens the store of a channel not held yet (an office
	// holds every channel, and opens one the first time it writes there).
	open func(ctx context.Context, channel string) (*Store, error)
}

// NewRouter returns a router over the everyone store all, holding no
// channel yet.
func NewRouter(all *Store) *Router {
	return &Router{all: all, chans: map[string]*Store{}}
}

// SetOpener makes the router open the store of a channel it does not hold
// when a write goes there (offices), instead of refusing the write.
func (r *Router) SetOpener(open func(ctx context.Context, channel string) (*Store, error)) {
	r.mu.Lock()
	r.open = open
	r.mu.Unlock()
}

// Everyone returns the everyone store.
func (r *Router) Everyone() *Store { return r.all }

// Add makes a channel store part of the router.
func (r *Router) Add(s *Store) error {
	c := s.opts.Channel
	if c == "" {
		return errors.New("router: the everyone store is not a channel store")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.chans[c]; ok {
		return fmt.Errorf("router: channel %s is held already", c)
	}
	r.chans[c] = s
	return nil
}

// Remove takes a channel's store out of the router and returns it (nil if
// it was not held); the caller closes it.
func (r *Router) Remove(channel string) *Store {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.chans[channel]
	delete(r.chans, channel)
	return s
}

// Channel returns the store of a channel held here, or nil.
func (r *Router) Channel(name string) *Store {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.chans[name]
}

// Held returns the channels held here, sorted.
func (r *Router) Held() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.chans))
	for c := range r.chans {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// Stores returns the everyone store, then the channel stores by name.
func (r *Router) Stores() []*Store {
	return append([]*Store{r.all}, r.channelStores()...)
}

func (r *Router) channelStores() []*Store {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Store, 0, len(r.chans))
	for _, s := range r.chans {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *Store) int { return strings.Compare(a.opts.Channel, b.opts.Channel) })
	return out
}

// routing returns the collection's schema when it is routed to channels
// (nil otherwise: it lives in the everyone store, as do unknown ones,
// whose errors the everyone store gives).
func (r *Router) routing(ctx context.Context, collection string) *schema.Collection {
	if strings.HasPrefix(collection, "_") {
		return nil
	}
	c, err := r.all.Collection(ctx, collection)
	if err != nil || c.Channel == nil {
		return nil
	}
	return c
}

// copyOf is one channel's copy of a record.
type copyOf struct {
	store *Store
	rec   *Record
}

// pick chooses which of a record's copies is shown, when more than one
// channel shows it (a record created in two channels by nodes offline, or
// one moving): the copy whose routing value names its own channel, then the
// newest.
func pick(c *schema.Collection, copies []copyOf) copyOf {
	best := copies[0]
	bestHome := atHome(c, best)
	for _, cp := range copies[1:] {
		home := atHome(c, cp)
		if home != bestHome {
			if home {
				best, bestHome = cp, true
			}
			continue
		}
		if cp.rec.Updated.Newer(best.rec.Updated) {
			best = cp
		}
	}
	return best
}

func atHome(c *schema.Collection, cp copyOf) bool {
	ch, err := c.ChannelOf(cp.rec.Values())
	return err == nil && ch == cp.store.opts.Channel
}

// locate returns the channel store showing a record of a routed
// collection, and the record (nil, nil when no held channel shows it). A
// record an office moved to another channel is shown where it was until
// the new channel's store here merged it; moved says where it went when
// no held channel shows it.
func (r *Router) locate(ctx context.Context, c *schema.Collection, id string) (*Store, *Record, error) {
	s, rec, _, err := r.locateMoved(ctx, c, id)
	return s, rec, err
}

func (r *Router) locateMoved(ctx context.Context, c *schema.Collection, id string) (*Store, *Record, *MovedError, error) {
	var copies []copyOf
	var moved *MovedError
	var movedFrom *Store
	eid, err := EscapeID(id)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, s := range r.channelStores() {
		// Most channels never held the record: one key tells.
		if known, err := s.knows(ctx, c.Name, eid); err != nil {
			return nil, nil, nil, err
		} else if !known {
			continue
		}
		rec, err := s.Get(ctx, c.Name, id)
		var mv *MovedError
		switch {
		case errors.As(err, &mv):
			moved, movedFrom = mv, s
			continue
		case errors.Is(err, ErrNotFound):
			continue
		case err != nil:
			return nil, nil, nil, err
		}
		copies = append(copies, copyOf{s, rec})
	}
	if len(copies) == 0 && moved != nil {
		// Moved to a channel held here: shown as that channel shows it now
		// (its Get above may have come before it merged the move), or as
		// it was until that channel merged it.
		if rec, _, err := movedFrom.MovedRecord(ctx, c.Name, id); err == nil && rec != nil {
			if cp, ok := r.movedCopy(ctx, listed{cp: copyOf{movedFrom, rec}, moved: moved}); ok {
				copies = append(copies, cp)
			}
		}
	}
	if len(copies) == 0 {
		return nil, nil, moved, nil
	}
	best := pick(c, copies)
	return best.store, best.rec, nil, nil
}

// storeFor returns the store of a channel, opening it on an office.
func (r *Router) storeFor(ctx context.Context, channel string) (*Store, error) {
	if s := r.Channel(channel); s != nil {
		return s, nil
	}
	r.mu.RLock()
	open := r.open
	r.mu.RUnlock()
	if open == nil {
		return nil, fmt.Errorf("channel %s: %w (held: %s)", channel, ErrChannelNotHeld, heldList(r.Held()))
	}
	return open(ctx, channel)
}

func heldList(held []string) string {
	if len(held) == 0 {
		return "none"
	}
	return strings.Join(held, ", ")
}

// home returns the store a write of a record goes to: the channel store
// showing it, or for a new record the channel its values route it to.
func (r *Router) home(ctx context.Context, c *schema.Collection, id string, fields map[string]any) (*Store, error) {
	s, _, moved, err := r.locateMoved(ctx, c, id)
	if err != nil || s != nil {
		return s, err
	}
	if moved != nil {
		return nil, fmt.Errorf("put %s/%s: it moved to channel %s: %w (held: %s)", c.Name, id, moved.To, ErrChannelNotHeld, heldList(r.Held()))
	}
	ch, err := c.ChannelOf(fields)
	if err != nil {
		return nil, fmt.Errorf("put %s/%s: %w", c.Name, id, err)
	}
	s, err = r.storeFor(ctx, ch)
	if err != nil {
		if _, given := fields[c.Channel.Field]; !given {
			return nil, fmt.Errorf("put %s/%s: no channel held here shows it, and a new record without %s goes to %w", c.Name, id, c.Channel.Field, err)
		}
		return nil, fmt.Errorf("put %s/%s: %w", c.Name, id, err)
	}
	return s, nil
}

// holding returns the store that knows a record of a routed collection,
// shown or not (deleted, or in a record conflict): the one showing it,
// else the first whose try succeeds.
func (r *Router) holding(ctx context.Context, c *schema.Collection, id string, try func(*Store) error) error {
	s, _, err := r.locate(ctx, c, id)
	if err != nil {
		return err
	}
	if s != nil {
		return try(s)
	}
	var first error
	for _, s := range r.channelStores() {
		err := try(s)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = fmt.Errorf("%s/%s: %w", c.Name, id, ErrNotFound)
	}
	return first
}

// Get reads a record.
func (r *Router) Get(ctx context.Context, collection, id string) (*Record, error) {
	c := r.routing(ctx, collection)
	if c == nil {
		return r.all.Get(ctx, collection, id)
	}
	if _, err := EscapeID(id); err != nil {
		return nil, err
	}
	_, rec, moved, err := r.locateMoved(ctx, c, id)
	switch {
	case err != nil:
		return nil, err
	case rec != nil:
		return rec, nil
	case moved != nil:
		return nil, moved
	}
	return nil, fmt.Errorf("%s/%s: %w", collection, id, ErrNotFound)
}

// Put writes fields of a record (see Store.Put).
func (r *Router) Put(ctx context.Context, collection, id string, fields map[string]any) (PutResult, error) {
	return r.PutText(ctx, collection, id, fields, nil)
}

// PutText writes fields of a record given as values and as text (see
// Store.PutText). A record already held is written where it is, even when
// the write changes its routing field.
func (r *Router) PutText(ctx context.Context, collection, id string, fields map[string]any, text map[string]string) (PutResult, error) {
	c := r.routing(ctx, collection)
	if c == nil {
		return r.all.PutText(ctx, collection, id, fields, text)
	}
	if _, err := EscapeID(id); err != nil {
		return PutResult{}, err
	}
	s, err := r.home(ctx, c, id, routingValues(c, fields, text))
	if err != nil {
		return PutResult{}, err
	}
	return s.PutText(ctx, collection, id, fields, text)
}

// routingValues returns the values that route a new record: fields, with
// the routing field taken from text when given as text.
func routingValues(c *schema.Collection, fields map[string]any, text map[string]string) map[string]any {
	t, ok := text[c.Channel.Field]
	if !ok {
		return fields
	}
	out := make(map[string]any, len(fields)+1)
	for k, v := range fields {
		out[k] = v
	}
	out[c.Channel.Field] = strings.TrimSpace(t)
	return out
}

// Delete deletes a record.
func (r *Router) Delete(ctx context.Context, collection, id string) (OpID, error) {
	c := r.routing(ctx, collection)
	if c == nil {
		return r.all.Delete(ctx, collection, id)
	}
	s, _, err := r.locate(ctx, c, id)
	if err != nil {
		return OpID{}, err
	}
	if s == nil {
		return OpID{}, fmt.Errorf("%s/%s: %w", collection, id, ErrNotFound)
	}
	return s.Delete(ctx, collection, id)
}

// History returns a field's values over time (see Store.History).
func (r *Router) History(ctx context.Context, collection, id, field string) (out []HistoryEntry, err error) {
	c := r.routing(ctx, collection)
	if c == nil {
		return r.all.History(ctx, collection, id, field)
	}
	// Every channel that held the record: a record deleted in one channel
	// may have been created again in another, and a move leaves the
	// writes it copied in the old channel too (same op ids: the channel
	// showing the record says which are visible).
	eid, err := EscapeID(id)
	if err != nil {
		return nil, err
	}
	shown, _, err := r.locate(ctx, c, id)
	if err != nil {
		return nil, err
	}
	stores := r.channelStores()
	if shown != nil {
		stores = slices.DeleteFunc(stores, func(s *Store) bool { return s == shown })
		stores = append([]*Store{shown}, stores...)
	}
	seen := map[string]bool{}
	out = []HistoryEntry{}
	for _, s := range stores {
		if known, err := s.knows(ctx, collection, eid); err != nil {
			return nil, err
		} else if !known {
			continue
		}
		h, err := s.History(ctx, collection, id, field)
		if err != nil {
			return nil, err
		}
		for _, e := range h {
			if ref := e.Field + "/" + e.Op.String(); !seen[ref] {
				seen[ref] = true
				out = append(out, e)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b HistoryEntry) int {
		switch {
		case b.Op.Newer(a.Op):
			return -1
		case a.Op.Newer(b.Op):
			return 1
		}
		return 0
	})
	return out, nil
}

// RecordConflicts returns the open conflicts of one record.
func (r *Router) RecordConflicts(ctx context.Context, collection, id string) (out []Conflict, err error) {
	c := r.routing(ctx, collection)
	if c == nil {
		return r.all.RecordConflicts(ctx, collection, id)
	}
	err = r.holding(ctx, c, id, func(s *Store) error {
		cs, err := s.RecordConflicts(ctx, collection, id)
		if err == nil && len(cs) == 0 {
			return fmt.Errorf("%s/%s: %w", collection, id, ErrNotFound)
		}
		out = cs
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return out, err
}

// Resolve ends a conflict (see Store.Resolve).
func (r *Router) Resolve(ctx context.Context, collection, id, field string, res Resolution) (op OpID, err error) {
	c := r.routing(ctx, collection)
	if c == nil {
		return r.all.Resolve(ctx, collection, id, field, res)
	}
	err = r.holding(ctx, c, id, func(s *Store) error {
		cs, err := s.RecordConflicts(ctx, collection, id)
		if err != nil {
			return err
		}
		if len(cs) == 0 {
			return fmt.Errorf("%s/%s: %w", collection, id, ErrNotFound)
		}
		op, err = s.Resolve(ctx, collection, id, field, res)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		// No channel holds a conflict of it: the everyone store's answer
		// (no conflict) is the right error.
		if s, _, lerr := r.locate(ctx, c, id); lerr == nil && s != nil {
			return s.Resolve(ctx, collection, id, field, res)
		}
	}
	return op, err
}

// Conflicts calls fn for every conflict of the collections (every one when
// none is given), by collection, record and field.
func (r *Router) Conflicts(ctx context.Context, collections []string, fn func(Conflict) error) error {
	stores := r.Stores()
	if len(stores) == 1 {
		return r.all.Conflicts(ctx, collections, fn)
	}
	var all []Conflict
	for _, s := range stores {
		if err := s.Conflicts(ctx, collections, func(c Conflict) error {
			all = append(all, c)
			return nil
		}); err != nil {
			return err
		}
	}
	slices.SortStableFunc(all, func(a, b Conflict) int {
		if c := strings.Compare(a.Collection, b.Collection); c != 0 {
			return c
		}
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return strings.Compare(a.Field, b.Field)
	})
	for _, c := range all {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

// Ignored lists the operations every store held here does not show.
func (r *Router) Ignored(ctx context.Context) ([]IgnoredOp, error) {
	var out []IgnoredOp
	for _, s := range r.Stores() {
		ig, err := s.Ignored(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, ig...)
	}
	return out, nil
}

// Duplicates calls fn for each group of likely duplicates (see
// Store.Duplicates). Records of different channels are never compared:
// each channel's duplicates are its own.
func (r *Router) Duplicates(ctx context.Context, collections []string, fn func(DuplicateGroup) error) error {
	for _, s := range r.Stores() {
		if err := s.Duplicates(ctx, collections, fn); err != nil {
			return err
		}
	}
	return nil
}

// CheckDuplicate refuses a write that would make a record a likely
// duplicate of another one of its channel (see Store.CheckDuplicate).
func (r *Router) CheckDuplicate(ctx context.Context, collection, id string, fields map[string]any, text map[string]string) error {
	c := r.routing(ctx, collection)
	if c == nil {
		return r.all.CheckDuplicate(ctx, collection, id, fields, text)
	}
	s, err := r.home(ctx, c, id, routingValues(c, fields, text))
	if err != nil {
		return err
	}
	return s.CheckDuplicate(ctx, collection, id, fields, text)
}

// MergeRecords merges two records of one channel (see Store.MergeRecords).
func (r *Router) MergeRecords(ctx context.Context, collection, keep, other string, preferKeep bool) (MergeResult, error) {
	c := r.routing(ctx, collection)
	if c == nil {
		return r.all.MergeRecords(ctx, collection, keep, other, preferKeep)
	}
	sk, _, err := r.locate(ctx, c, keep)
	if err != nil {
		return MergeResult{}, err
	}
	so, _, err := r.locate(ctx, c, other)
	if err != nil {
		return MergeResult{}, err
	}
	switch {
	case sk == nil:
		return MergeResult{}, fmt.Errorf("merge %s/%s: %w", collection, keep, ErrNotFound)
	case so == nil:
		return MergeResult{}, fmt.Errorf("merge %s/%s: %w", collection, other, ErrNotFound)
	case sk != so:
		return MergeResult{}, fmt.Errorf("merge %s/%s and %s: %w (%s, %s)", collection, keep, other, ErrOtherChannels, sk.opts.Channel, so.opts.Channel)
	}
	return sk.MergeRecords(ctx, collection, keep, other, preferKeep)
}

// Schema returns the network's schema.
func (r *Router) Schema(ctx context.Context) (*schema.Schema, error) { return r.all.Schema(ctx) }

// Collection returns one collection of the schema.
func (r *Router) Collection(ctx context.Context, name string) (*schema.Collection, error) {
	return r.all.Collection(ctx, name)
}

// ApplySchema replaces the schema (see Store.ApplySchema).
func (r *Router) ApplySchema(ctx context.Context, next *schema.Schema) ([]string, error) {
	return r.all.ApplySchema(ctx, next)
}
