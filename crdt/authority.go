package crdt

import (
	"context"
	"fmt"
	"strings"
	"sync"
)

// Channel stores and their authority (docs/design/channels.md, 2.2 and 2.3).
//
// A channel store (Options.Channel set) holds the records of routed
// collections routed to its channel, in a DAG of its own. What decides
// which of its operations count and how conflicts are decided (members,
// roles, schema, grants) is not its own: it is read from its authority,
// the node's everyone store (Options.Authority), which holds Ferry's own
// collections. The everyone store keeps a list of the channel stores that
// read from it and tells each when what they read changes.

// auth returns the store that holds the members, roles, schema and
// grants this store counts operations by: its Options.Authority for a
// channel store, itself otherwise.
func (s *Store) auth() *Store {
	if a := s.opts.Authority; a != nil {
		return a
	}
	return s
}

// dependents are the channel stores whose authority a store is.
type dependents struct {
	mu     sync.Mutex
	stores map[*Store]struct{}
}

func (d *dependents) add(s *Store) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stores == nil {
		d.stores = map[*Store]struct{}{}
	}
	d.stores[s] = struct{}{}
}

func (d *dependents) remove(s *Store) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.stores, s)
}

// list copies the dependents, so that they are told outside the lock.
func (d *dependents) list() []*Store {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*Store, 0, len(d.stores))
	for s := range d.stores {
		out = append(out, s)
	}
	return out
}

// authorityCollection reports whether what a collection holds decides
// which operations count, or how they are decided, in the channel stores
// (membership, roles, schema, grants).
func authorityCollection(collection string) bool {
	switch collection {
	case SchemaCollection, MembersCollection, NodesCollection, GrantsCollection:
		return true
	}
	return false
}

// authorityKeyChanged is told by keyChanged of each operation merged into
// a collection: when it is one the channel stores read from this store,
// their caches are marked stale. Like keyChanged, it runs inside
// go-ds-crdt's merge: it only sets marks, under short locks nobody holds
// while waiting for anything.
func (s *Store) authorityKeyChanged(collection string) {
	if s.opts.Channel != "" {
		return // a channel store is nobody's authority
	}
	switch collection {
	case GrantsCollection, MembersCollection:
		// Which grants count depends on the membership.
		s.grantState.stale.Store(true)
	}
	if authorityCollection(collection) {
		s.authorityChanged()
	}
}

// authorityChanged tells every channel store that reads from this store
// that members, roles, schema or grants may have changed.
func (s *Store) authorityChanged() {
	for _, d := range s.deps.list() {
		d.dependOnChanged()
	}
}

// dependOnChanged marks what a channel store derived from its authority's
// state as stale: the digest (and the ignored operations listed with it)
// is rebuilt, the unique and duplicate indexes built again at their next
// use. Its trust view is built at each read from the authority's caches.
func (s *Store) dependOnChanged() {
	s.digest.dirtyMu.Lock()
	s.digest.rebuild = true
	s.digest.dirtyMu.Unlock()
	s.unique.dirtyMu.Lock()
	s.unique.epoch++
	s.unique.dirtyMu.Unlock()
	s.dups.dirtyMu.Lock()
	s.dups.epoch++
	s.dups.dirtyMu.Unlock()
}

// notInChannel reports whether a collection is one a channel store never
// holds: Ferry's own collections of the everyone store (its _epochs and
// _lost are its own).
func notInChannel(collection string) bool {
	switch collection {
	case SchemaCollection, MembersCollection, NodesCollection, GrantsCollection, ChannelsCollection:
		return true
	}
	return false
}

// checkInChannel refuses, in a channel store, a write of a collection the
// store does not hold: Ferry's own collections, and collections the schema
// does not route to channels. Every node would ignore it (ReasonWrongStore).
func (s *Store) checkInChannel(ctx context.Context, collection string) error {
	if s.opts.Channel == "" && !strings.HasPrefix(collection, "_") {
		// The everyone store holds no routed collection.
		sc, err := s.Schema(ctx)
		if err != nil {
			return err
		}
		if c := sc.Collections[collection]; c != nil && c.Channel != nil {
			return fmt.Errorf("%w: collection %s is routed to channels (by %s): its records are written in their channel's store (through the node's records, crdt.Router), not in the everyone store", ErrForbidden, collection, c.Channel.Field)
		}
		return nil
	}
	if s.opts.Channel == "" || collection == EpochsCollection || collection == LostCollection {
		return nil
	}
	if notInChannel(collection) {
		return fmt.Errorf("%w: %s is not held in a channel: it is written in the everyone store (channel %s holds records of routed collections)", ErrForbidden, collection, s.opts.Channel)
	}
	sc, err := s.Schema(ctx)
	if err != nil {
		return err
	}
	if c := sc.Collections[collection]; c != nil && c.Channel == nil {
		return fmt.Errorf("%w: collection %s is not routed to channels: its records are written in the everyone store, not in channel %s", ErrForbidden, collection, s.opts.Channel)
	}
	return nil
}

// checkGranted refuses a write into a channel store by a node that is not
// granted its channel now (an office holds every channel). m is this
// node's membership.
func (s *Store) checkGranted(ctx context.Context, m Member, collection string) error {
	if s.opts.Channel == "" || m.Role == RoleOffice || strings.HasPrefix(collection, "_") {
		return nil
	}
	g, err := s.grants(ctx)
	if err != nil {
		return err
	}
	cur := g.Current(s.opts.Writer)
	for _, c := range cur {
		if c == s.opts.Channel {
			// The write must come after the grant in every node's eyes,
			// whatever this node's clock says (a grant from an office whose
			// clock runs ahead, merged before a kill -9 lost the clock's
			// observation of it): the clock moves past it now.
			if iv := g.Intervals(s.opts.Writer, c); len(iv) > 0 {
				s.clock.Observe(iv[len(iv)-1].From)
			}
			return nil
		}
	}
	held := "no channel"
	if len(cur) > 0 {
		held = strings.Join(cur, ", ")
	}
	return fmt.Errorf("%w: a %s granted %s may not write into channel %s", ErrForbidden, m.Role, held, s.opts.Channel)
}

// wrongStore returns why an operation of collection does not count in the
// store the view is of ("" when the store holds the collection): a channel
// store holds only routed collections, and its own _epochs and _lost.
func (v *view) wrongStore(collection string) string {
	if v.channel == "" || collection == EpochsCollection || collection == LostCollection {
		return ""
	}
	if notInChannel(collection) {
		return ReasonWrongStore
	}
	if strings.HasPrefix(collection, "_") {
		return ""
	}
	if v.schema != nil {
		if c := v.schema.Collections[collection]; c != nil && c.Channel == nil {
			return ReasonWrongStore
		}
	}
	return ""
}

// notGranted returns ReasonNotGranted when an operation of a routed
// collection written by member m in a channel store does not count: its
// writer is not an office, was not granted the channel at the op's time, and no office
// vouches for the write.
func (v *view) notGranted(collection string, m Member, op Op, voucher string) string {
	if v.channel == "" || m.Role == RoleOffice || strings.HasPrefix(collection, "_") {
		return ""
	}
	if voucher != "" && v.officeVouched(&write{Voucher: voucher}) {
		return ""
	}
	if v.grants.At(op.ID.Writer, v.channel, op.ID.Time) {
		return ""
	}
	return ReasonNotGranted
}
