package node

import (
	"context"
	"sync"

	"github.com/ferry-crm/ferry/crdt"
)

// Change is a record that changed, by a local write or a merge of a
// peer's: read it again (Store().Get) to see its new state.
type Change struct {
	Collection string
	ID         string
}

// Watch returns the changes of records, from now until ctx is done (then
// the channel is closed). Changes a slow reader has not taken yet are
// coalesced per record, never dropped; records of internal collections
// (names starting with "_") are not reported.
func (n *Node) Watch(ctx context.Context) <-chan Change {
	w := &watcher{wake: make(chan struct{}, 1), pending: map[Change]bool{}}
	out := make(chan Change)
	n.watch.add(w)
	go func() {
		defer close(out)
		defer n.watch.remove(w)
		for {
			for _, c := range w.take() {
				select {
				case out <- c:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
		}
	}()
	return out
}

// watchers are the node's Watch calls.
type watchers struct {
	mu  sync.Mutex
	all map[*watcher]bool
}

type watcher struct {
	wake    chan struct{}
	mu      sync.Mutex
	order   []Change
	pending map[Change]bool
}

func (ws *watchers) add(w *watcher) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.all == nil {
		ws.all = map[*watcher]bool{}
	}
	ws.all[w] = true
}

func (ws *watchers) remove(w *watcher) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	delete(ws.all, w)
}

// changed is called from the store's merge hooks: it never blocks.
func (ws *watchers) changed(collection, escapedID string) {
	if len(collection) > 0 && collection[0] == '_' {
		return
	}
	id, err := crdt.UnescapeID(escapedID)
	if err != nil {
		return
	}
	c := Change{Collection: collection, ID: id}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for w := range ws.all {
		w.mu.Lock()
		if !w.pending[c] {
			w.pending[c] = true
			w.order = append(w.order, c)
		}
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// take returns the pending changes in the order they first came.
func (w *watcher) take() []Change {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.order
	w.order, w.pending = nil, map[Change]bool{}
	return out
}
