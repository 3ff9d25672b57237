package heads

import (
	"context"
	"sync"

	dscrdt "github.com/ipfs/go-ds-crdt"
)

// Gate is the Broadcaster go-ds-crdt is given: it holds back received
// heads until the node opens it. go-ds-crdt v0.6.8 makes a replica without
// heads adopt the heads it receives before merging them; a local write at
// that moment links to a block nobody then processes, and the branch is
// missing until a repair. A node makes its first write (its _nodes record)
// before it opens the gate, so it always has heads of its own when peers'
// heads arrive. Received payloads wait in the Broadcaster's queue
// meanwhile. Broadcast, Inject, SetAdmit and Close are the Broadcaster's.
type Gate struct {
	*Broadcaster
	open chan struct{}
	once sync.Once
}

var _ dscrdt.Broadcaster = (*Gate)(nil)

// NewGate returns a closed gate in front of b.
func NewGate(b *Broadcaster) *Gate {
	return &Gate{Broadcaster: b, open: make(chan struct{})}
}

// Open lets received heads through. Later calls do nothing.
func (g *Gate) Open() { g.once.Do(func() { close(g.open) }) }

// Next waits for the gate to open, then for the next payload. It returns
// dscrdt.ErrNoMoreBroadcast once the Broadcaster is closed, and ctx.Err()
// if ctx is done first.
func (g *Gate) Next(ctx context.Context) ([]byte, error) {
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-g.done():
		return nil, dscrdt.ErrNoMoreBroadcast
	}
	return g.Broadcaster.Next(ctx)
}
