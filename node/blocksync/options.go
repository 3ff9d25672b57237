package blocksync

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/protocol"
)

// Option configures New.
type Option func(*config)

// WithProtocol runs the Syncer on id instead of Protocol, responder and
// requester alike: it only syncs with peers running a Syncer on the same
// id (a channel's block sync runs on one under wire.ChannelPrefix).
func WithProtocol(id protocol.ID) Option {
	return func(c *config) { c.protocol = id }
}

// WithServingSlots makes the Syncer take a slot of s for every request it
// serves, instead of a bound of its own (4 requests at once): Syncers that
// share s serve at most s's size of requests at once between them.
func WithServingSlots(s *Slots) Option {
	return func(c *config) { c.slots = s }
}

// Slots bounds the block sync requests served at once, by one Syncer or
// shared by several (WithServingSlots): a request waits for a free slot
// (up to 30 s, then it is dropped) before the responder walks its DAG.
type Slots struct {
	ch chan struct{}

	mu          sync.Mutex
	inUse, peak int // for tests
}

// NewSlots returns n slots (at least 1).
func NewSlots(n int) *Slots {
	return &Slots{ch: make(chan struct{}, max(n, 1))}
}

// take is called once a slot was acquired (sent on ch).
func (s *Slots) take() {
	s.mu.Lock()
	s.inUse++
	s.peak = max(s.peak, s.inUse)
	s.mu.Unlock()
}

// release frees a slot taken.
func (s *Slots) release() {
	s.mu.Lock()
	s.inUse--
	s.mu.Unlock()
	<-s.ch
}

// peakInUse is the most slots held at once so far.
func (s *Slots) peakInUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}
