package crdt

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	cid "github.com/ipfs/go-cid"
)

// A node moves to a later epoch as soon as it hears of one: heads of
// another epoch never reach go-ds-crdt (see lenientBroadcaster.Next); those
// of a later epoch start an adoption in the background, one at a time.

// adoptRetry is how long an epoch whose adoption failed is left alone.
const adoptRetry = 30 * time.Second

// epochState runs the store's background adoptions.
type epochState struct {
	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	running bool
	next    *epochOffer
	failed  map[Epoch]time.Time
	// lastErr is why the last adoption failed ("" after a success).
	lastErr string
	// peerLater is the latest epoch heard of that this node is not in.
	heard Epoch
}

type epochOffer struct {
	ep    Epoch
	heads []cid.Cid
}

func (e *epochState) init() {
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.failed = map[Epoch]time.Time{}
}

func (e *epochState) close() {
	e.mu.Lock()
	cancel := e.cancel
	e.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	e.wg.Wait()
}

// foreignHeads is told of heads of another epoch than this node's (from
// go-ds-crdt's receive loop: it must not block).
func (s *Store) foreignHeads(ep Epoch, payload []byte) {
	if !ep.After(s.Epoch()) {
		return
	}
	heads, err := decodeHeads(payload)
	if err != nil || len(heads) == 0 {
		return
	}
	s.OfferEpoch(ep, heads)
}

// OfferEpoch tells the store that a peer is in epoch ep with these heads:
// if ep is later than this node's, the store moves to it in the
// background. It never blocks.
func (s *Store) OfferEpoch(ep Epoch, heads []cid.Cid) {
	e := &s.epochs
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx == nil || e.ctx.Err() != nil || !ep.After(s.Epoch()) {
		return
	}
	if ep.After(e.heard) {
		e.heard = ep
	}
	if t, ok := e.failed[ep]; ok && time.Since(t) < adoptRetry {
		return
	}
	switch {
	case e.next == nil || ep.After(e.next.ep):
		e.next = &epochOffer{ep: ep, heads: heads}
	case ep == e.next.ep: // heads of several peers: all of them
		for _, h := range heads {
			if !slices.Contains(e.next.heads, h) && len(e.next.heads) < 1024 {
				e.next.heads = append(e.next.heads, h)
			}
		}
	}
	if e.running {
		return
	}
	e.running = true
	e.wg.Add(1)
	go s.adoptLoop()
}

func (s *Store) adoptLoop() {
	e := &s.epochs
	defer e.wg.Done()
	for {
		e.mu.Lock()
		off := e.next
		e.next = nil
		if off == nil || e.ctx.Err() != nil {
			e.running = false
			e.mu.Unlock()
			return
		}
		ctx := e.ctx
		e.mu.Unlock()
		if !off.ep.After(s.Epoch()) {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, s.opts.AdoptTimeout)
		_, err := s.Adopt(actx, off.ep, off.heads)
		cancel()
		e.mu.Lock()
		if err != nil && !errors.Is(err, ErrStaleEpoch) {
			e.failed[off.ep] = time.Now()
			e.lastErr = err.Error()
			if ctx.Err() == nil {
				s.log.Warn("moving to a later epoch failed; tried again later", "epoch", off.ep, "err", err)
			}
		} else {
			e.lastErr = ""
		}
		// Heads of this epoch heard while moving to it go to go-ds-crdt.
		if n := e.next; n != nil && n.ep == s.Epoch() && s.bcast != nil {
			e.next = nil
			if payload, err := EncodeHeads(n.heads, n.ep); err == nil {
				s.bcast.requeue(payload)
			}
		}
		e.mu.Unlock()
	}
}

// EpochState is what the store knows of epochs: its own, the latest heard
// of, and whether it is moving.
type EpochState struct {
	Current Epoch
	Info    *EpochInfo
	// Heard is the latest epoch a peer announced (zero: none later than
	// Current).
	Heard Epoch
	// Adopting: a move to a later epoch is running.
	Adopting bool
	// LastError: why the last move failed ("" if it did not).
	LastError string
}

// EpochStatus returns the store's epoch state.
func (s *Store) EpochStatus() EpochState {
	e := &s.epochs
	e.mu.Lock()
	defer e.mu.Unlock()
	st := EpochState{Current: s.Epoch(), Info: s.EpochInfo(), Adopting: e.running, LastError: e.lastErr}
	if e.heard.After(st.Current) {
		st.Heard = e.heard
	}
	return st
}
