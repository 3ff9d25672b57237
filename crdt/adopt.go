package crdt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dscrdt "github.com/ipfs/go-ds-crdt"
)

// A node moves to a later epoch as soon as it hears of one: heads of
// another epoch never reach go-ds-crdt (see lenientBroadcaster.Next); those
// of a later epoch start an adoption in the background, one at a time.

// adoptRetry is how long an epoch whose adoption failed is left alone.
const adoptRetry = 30 * time.Second

// epochState runs the store's background adoptions.
type epochState struct {
	// change is held by whatever moves the store to another epoch (a
	// compaction, an adoption) from its first write to the drop of the old
	// epoch: two at once would drop blocks the other is merging (two
	// consecutive seeds can hold identical blocks).
	change  sync.Mutex
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
		if err != nil && !errors.Is(err, ErrStaleEpoch) && !errors.Is(err, errSuperseded) {
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

// Moving to an epoch a peer is in: its DAG is merged into a store of its
// own namespace (a side store), then the store switches (switch.go).

// Adopt moves this node to epoch ep, whose DAG has heads: it merges that
// DAG into a store of its own namespace (blocks are fetched through the
// DAG service), checks its manifest, carries over what the cut does not
// cover and drops the old epoch. It returns ErrStaleEpoch when ep is not
// later than this node's epoch.
func (s *Store) Adopt(ctx context.Context, ep Epoch, heads []cid.Cid) (*EpochReport, error) {
	start := time.Now()
	s.epochs.change.Lock()
	defer s.epochs.change.Unlock()
	if !ep.After(s.Epoch()) {
		return nil, ErrStaleEpoch
	}
	if err := s.markBuilding(ctx, ep); err != nil {
		return nil, fmt.Errorf("adopt epoch %s: %w", ep, err)
	}
	side, feed, err := s.openSide(ctx, ep, true)
	if err != nil {
		return nil, fmt.Errorf("adopt epoch %s: %w", ep, err)
	}
	payload, err := EncodeHeads(heads, ep)
	if err == nil {
		feed.give(payload)
		err = s.awaitSide(ctx, side, feed, payload, ep, heads)
	}
	var info *EpochInfo
	if err == nil {
		info, err = side.readManifest(ctx, ep)
	}
	if cerr := side.Close(); err == nil && cerr != nil {
		err = cerr
	}
	feed.close()
	if err != nil {
		// What was merged of it goes (it is fetched again if offered
		// again); its blocks stay until they are dropped with an epoch.
		if _, cerr := s.countAndClear(ctx, prefix(ep.namespace(s.opts.Namespace))); cerr == nil {
			_ = s.base.Delete(ctx, s.roots.build.ChildString(ep.String()))
		}
		return nil, fmt.Errorf("adopt epoch %s: %w", ep, err)
	}
	rep := &EpochReport{Epoch: ep, Prev: s.Epoch()}
	if err := s.switchEpoch(ctx, info, rep, false); err != nil {
		return nil, fmt.Errorf("adopt epoch %s: %w", ep, err)
	}
	rep.Took = time.Since(start)
	return rep, nil
}

// errSuperseded: a later epoch was offered while moving to this one.
var errSuperseded = errors.New("a later epoch was offered meanwhile")

// awaitSide waits until side has merged every block below heads. Heads are
// handed to it again every few seconds (a block fetch that timed out is
// not retried by go-ds-crdt), and the wait ends early when a later epoch
// is offered: the peers that were in ep may have dropped its blocks.
func (s *Store) awaitSide(ctx context.Context, side *Store, feed *feedBroadcaster, payload []byte, ep Epoch, heads []cid.Cid) error {
	return awaitMerged(ctx, side, feed, payload, heads, func() error {
		if s.epochs.laterOffered(ep) {
			return errSuperseded
		}
		return nil
	})
}

// laterOffered reports whether an epoch later than ep waits to be adopted.
func (e *epochState) laterOffered(ep Epoch) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.next != nil && e.next.ep.After(ep)
}

func (s *Store) merged(ctx context.Context, heads []cid.Cid) (bool, error) {
	for _, h := range heads {
		if ok, err := s.Processed(ctx, h); err != nil || !ok {
			return false, err
		}
	}
	if s.Stats(ctx).QueuedJobs > 0 {
		return false, nil
	}
	d, err := s.scanDAG(ctx)
	if err != nil {
		return false, err
	}
	return len(d.missing) == 0 && len(d.unmerged) == 0, nil
}

// openSide opens a store over epoch ep's namespace, sharing this store's
// datastore, DAG service, clock and keys, announcing nothing. With feed,
// heads handed to the returned feed are merged.
func (s *Store) openSide(ctx context.Context, ep Epoch, feed bool) (*Store, *feedBroadcaster, error) {
	return s.openSideAt(ctx, ep, ep.namespace(s.opts.Namespace), feed)
}

// openSideAt is openSide over namespace ns.
func (s *Store) openSideAt(ctx context.Context, ep Epoch, ns ds.Key, feed bool) (*Store, *feedBroadcaster, error) {
	o := s.opts
	o.Namespace = ns
	o.Recover, o.OnChange, o.OnEpoch = false, nil, nil
	o.RebroadcastInterval = time.Hour
	o.Logger = s.log.With("epoch", ep.String())
	o.side = &ep
	var bc dscrdt.Broadcaster
	var fb *feedBroadcaster
	if feed {
		fb = newFeedBroadcaster()
		bc = fb
	}
	side, err := New(ctx, s.base, s.dag, bc, o)
	if err != nil {
		return nil, nil, fmt.Errorf("open epoch %s: %w", ep, err)
	}
	side.clock = s.clock
	if side.bcast != nil {
		side.bcast.quiet.Store(true)
	}
	return side, fb, nil
}

// feedBroadcaster hands go-ds-crdt the heads given to it, and sends
// nothing.
type feedBroadcaster struct {
	ch   chan []byte
	done chan struct{}
}

func newFeedBroadcaster() *feedBroadcaster {
	return &feedBroadcaster{ch: make(chan []byte, 4), done: make(chan struct{})}
}

func (f *feedBroadcaster) give(data []byte) {
	select {
	case f.ch <- data:
	case <-f.done:
	}
}

// offer hands data over unless go-ds-crdt has not taken what it was given.
func (f *feedBroadcaster) offer(data []byte) {
	select {
	case f.ch <- data:
	default:
	}
}

func (f *feedBroadcaster) close() {
	select {
	case <-f.done:
	default:
		close(f.done)
	}
}

func (f *feedBroadcaster) Broadcast(context.Context, []byte) error { return nil }

func (f *feedBroadcaster) Next(ctx context.Context) ([]byte, error) {
	select {
	case d := <-f.ch:
		return d, nil
	case <-f.done:
		return nil, dscrdt.ErrNoMoreBroadcast
	case <-ctx.Done():
		return nil, dscrdt.ErrNoMoreBroadcast
	}
}
