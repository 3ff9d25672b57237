package crdt

import (
	"context"
	"errors"
	"slices"
)

// listed is one record of one channel store's scan, in key order. key is
// its escaped id and a slash: the records of a scan come in the order of
// their keys ("<escaped id>/<field>/..."), which is not always the order of
// the ids alone ("a-b/" sorts before "a/").
type listed struct {
	key   string
	cp    copyOf
	moved *MovedError // the record was moved away from cp's store
}

// errListStopped ends a channel's scan when the merge no longer reads it.
var errListStopped = errors.New("list stopped")

// List calls fn for every existing record of a collection, in key order;
// a routed collection's records come from every channel held, each record
// once (see pick).
func (r *Router) List(ctx context.Context, collection string, fn func(*Record) error) error {
	c := r.routing(ctx, collection)
	if c == nil {
		return r.all.List(ctx, collection, fn)
	}
	stores := r.channelStores()
	switch len(stores) {
	case 0:
		// Nothing held: the everyone store answers (an unknown collection's
		// error, or nothing).
		return r.all.List(ctx, collection, fn)
	}
	return r.mergeScans(ctx, collection, stores, func(copies []copyOf, moved []listed) error {
		if len(copies) == 0 {
			// Only copies moved away: shown as the channel it went to
			// shows it now, or as it was until that channel merged it.
			for _, m := range moved {
				if cp, ok := r.movedCopy(ctx, m); ok {
					copies = append(copies, cp)
				}
			}
			if len(copies) == 0 {
				return nil
			}
		}
		return fn(pick(c, copies).rec)
	})
}

// SplitRecords calls fn for every record of a routed collection that two or
// more held channels show, each at home (its routing value naming its
// channel): a record created with one id in two channels by nodes that did
// not hold each other's copy. channels is sorted.
func (r *Router) SplitRecords(ctx context.Context, fn func(collection, id string, channels []string) error) error {
	stores := r.channelStores()
	if len(stores) < 2 {
		return nil
	}
	sc, err := r.all.Schema(ctx)
	if err != nil {
		return err
	}
	for _, name := range sc.Names() {
		c := sc.Collections[name]
		if c.Channel == nil {
			continue
		}
		err := r.mergeScans(ctx, name, stores, func(copies []copyOf, _ []listed) error {
			var home []string
			for _, cp := range copies {
				if atHome(c, cp) {
					home = append(home, cp.store.opts.Channel)
				}
			}
			if len(home) < 2 {
				return nil
			}
			slices.Sort(home)
			return fn(name, copies[0].rec.ID, home)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// mergeScans scans a collection in every store at once, in key order, and
// calls fn once per record with the copies shown and the copies moved away.
func (r *Router) mergeScans(ctx context.Context, collection string, stores []*Store, fn func(copies []copyOf, moved []listed) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type stream struct {
		ch   chan listed
		err  chan error
		head *listed
	}
	streams := make([]*stream, len(stores))
	for i, s := range stores {
		st := &stream{ch: make(chan listed, 64), err: make(chan error, 1)}
		streams[i] = st
		go func() {
			defer close(st.ch)
			st.err <- s.listWithMoved(ctx, collection, func(rec *Record, moved *MovedError) error {
				if moved != nil && r.Channel(moved.To) == nil {
					return nil // moved to a channel not held here
				}
				eid, err := EscapeID(rec.ID)
				if err != nil {
					return nil
				}
				select {
				case st.ch <- listed{eid + "/", copyOf{s, rec}, moved}:
					return nil
				case <-ctx.Done():
					return errListStopped
				}
			})
		}()
	}
	// next refills a stream's head; false once it is done.
	next := func(st *stream) (bool, error) {
		l, ok := <-st.ch
		if !ok {
			if err := <-st.err; err != nil && !errors.Is(err, errListStopped) {
				return false, err
			}
			st.head = nil
			return false, nil
		}
		st.head = &l
		return true, nil
	}
	live := streams[:0:0]
	for _, st := range streams {
		ok, err := next(st)
		if err != nil {
			return err
		}
		if ok {
			live = append(live, st)
		}
	}
	for len(live) > 0 {
		low := live[0].head.key
		for _, st := range live[1:] {
			if st.head.key < low {
				low = st.head.key
			}
		}
		var copies []copyOf
		var moved []listed
		kept := live[:0]
		for _, st := range live {
			if st.head.key != low {
				kept = append(kept, st)
				continue
			}
			if st.head.moved != nil {
				moved = append(moved, *st.head)
			} else {
				copies = append(copies, st.head.cp)
			}
			ok, err := next(st)
			if err != nil {
				return err
			}
			if ok {
				kept = append(kept, st)
			}
		}
		live = kept
		if err := fn(copies, moved); err != nil {
			return err
		}
	}
	return nil
}

// movedCopy returns what to show of a record moved away from a channel
// store to another channel held here whose scan did not show it: the
// record as that channel shows it now, or, until it merged the move's
// copies, the record as it was.
func (r *Router) movedCopy(ctx context.Context, m listed) (copyOf, bool) {
	to := r.Channel(m.moved.To)
	if to == nil {
		return copyOf{}, false
	}
	rec, err := to.Get(ctx, m.cp.rec.Collection, m.cp.rec.ID)
	if err == nil {
		return copyOf{to, rec}, true
	}
	var again *MovedError
	if errors.As(err, &again) {
		return copyOf{}, false // it moved on from there too
	}
	if m.moved.HeadsGone(to) {
		return copyOf{}, false
	}
	if !to.HasProcessed(ctx, m.moved.Heads) {
		return m.cp, true
	}
	// The move's heads are merged there, yet that channel holds no write
	// of the record (its copies in a block below them, merged after them,
	// as go-ds-crdt merges from the heads down): as it was, not nowhere.
	eid, err := EscapeID(m.cp.rec.ID)
	if err != nil {
		return copyOf{}, false
	}
	if known, err := to.knows(ctx, m.cp.rec.Collection, eid); err == nil && !known {
		return m.cp, true
	}
	return copyOf{}, false
}
