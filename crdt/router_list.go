package crdt

import (
	"context"
	"errors"
)

// listed is one record of one channel store's scan, in key order. key is
// its escaped id and a slash: the records of a scan come in the order of
// their keys ("<escaped id>/<field>/..."), which is not always the order of
// the ids alone ("a-b/" sorts before "a/").
type listed struct {
	key string
	cp  copyOf
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
	case 1:
		return stores[0].List(ctx, collection, fn)
	}
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
			st.err <- s.List(ctx, collection, func(rec *Record) error {
				eid, err := EscapeID(rec.ID)
				if err != nil {
					return nil
				}
				select {
				case st.ch <- listed{eid + "/", copyOf{s, rec}}:
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
		kept := live[:0]
		for _, st := range live {
			if st.head.key != low {
				kept = append(kept, st)
				continue
			}
			copies = append(copies, st.head.cp)
			ok, err := next(st)
			if err != nil {
				return err
			}
			if ok {
				kept = append(kept, st)
			}
		}
		live = kept
		if err := fn(pick(c, copies).rec); err != nil {
			return err
		}
	}
	return nil
}
