package node

import (
	"context"

	dscrdt "github.com/ipfs/go-ds-crdt"
)

// gatedBroadcaster holds back received heads until the node has written its
// first block. go-ds-crdt v0.6.8 makes a replica without heads adopt the
// heads it receives before merging them; a local write at that moment links
// to a block nobody then processes, and the branch is missing until a
// repair. A node's first write (its _nodes record) is made before the gate
// opens, so it always has heads of its own when peers' heads arrive.
// Received payloads wait in the Broadcaster's queue meanwhile.
type gatedBroadcaster struct {
	*Broadcaster
	open chan struct{}
}

var _ dscrdt.Broadcaster = (*gatedBroadcaster)(nil)

func newGatedBroadcaster(b *Broadcaster) *gatedBroadcaster {
	return &gatedBroadcaster{Broadcaster: b, open: make(chan struct{})}
}

// Open lets received heads through. Call once.
func (g *gatedBroadcaster) Open() { close(g.open) }

// Next waits for the gate, then for the next payload.
func (g *gatedBroadcaster) Next(ctx context.Context) ([]byte, error) {
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-g.Broadcaster.ctx.Done():
		return nil, dscrdt.ErrNoMoreBroadcast
	}
	return g.Broadcaster.Next(ctx)
}
