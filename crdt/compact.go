package crdt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Errors of compaction and epochs.
var (
	// ErrBusy: the store is still merging what peers sent (or needs a
	// repair): a compaction now would not know what it holds.
	ErrBusy = errors.New("the store is still syncing")
	// ErrStaleEpoch: the epoch offered is not later than this node's.
	ErrStaleEpoch = errors.New("not a later epoch")
	// ErrBadEpoch: an epoch's manifest is missing, does not match its id,
	// or was not written by an office.
	ErrBadEpoch = errors.New("invalid epoch")
)

// EpochReport says what moving to a new epoch did.
type EpochReport struct {
	Epoch Epoch
	Prev  Epoch
	// Seeded: writes and records the new epoch starts with (compaction).
	Seeded  int
	Records int
	// Vouched: seeded writes of import batches this office signed for
	// (each seeded apart from its batch).
	Vouched int
	// MovedAway: writes not seeded, of records an office moved to another
	// channel (their copies are there; the move op stays).
	MovedAway int
	// Carried: writes of the old epoch the cut did not cover, carried
	// over; Facts: records given a write listing what those superseded.
	Carried int
	Facts   int
	// Archived: records whose recent superseded values were kept (see
	// Options.HistoryKeep).
	Archived int
	// Dropped: the old epoch's keys and blocks removed.
	DroppedKeys   int
	DroppedBlocks int
	Took          time.Duration
}

// Compact starts a new epoch from this node's visible state (see
// epoch.go). Only an office compacts a network with a trust model. It
// fails with ErrBusy while blocks peers sent are still being merged.
func (s *Store) Compact(ctx context.Context) (*EpochReport, error) {
	start := time.Now()
	if s.opts.Trust != nil {
		roles, err := s.roles(ctx)
		if err != nil {
			return nil, fmt.Errorf("compact: %w", err)
		}
		if roles[s.opts.Writer] != RoleOffice {
			return nil, fmt.Errorf("compact: only an office starts an epoch: %w", ErrForbidden)
		}
	}
	if !s.epochs.change.TryLock() {
		return nil, fmt.Errorf("compact: %w (moving to another epoch)", ErrBusy)
	}
	defer s.epochs.change.Unlock()
	if st := s.Stats(ctx); st.Dirty {
		return nil, fmt.Errorf("compact: %w (a repair is pending)", ErrBusy)
	}
	cut, err := s.cutVector(ctx)
	if err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	// What the current epoch's cut covers is known here too, through its
	// seed, though the seed holds only the writes that were visible: the
	// new cut covers it as well (else a write the office knew dead, newer
	// than anything the seed shows of its writer, would be carried into
	// the new epoch by a node that was away, and show again).
	if prev := s.EpochInfo(); prev != nil {
		for w, ts := range prev.Cut {
			if t, err := ParseTimestamp(ts); err == nil && t > cut[w] {
				cut[w] = t
			}
		}
	}
	cur := s.Epoch()
	info := &EpochInfo{Number: cur.Number + 1, Prev: cur.String(), By: s.opts.Writer,
		At: s.opts.Now().UTC().Truncate(time.Millisecond), Cut: map[string]string{}, Keep: s.opts.HistoryKeep}
	for w, t := range cut {
		info.Cut[w] = t.String()
	}
	if err := sealEpochInfo(info); err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	rep := &EpochReport{Epoch: info.Epoch, Prev: cur}
	if err := s.markBuilding(ctx, info.Epoch); err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	side, _, err := s.openSide(ctx, info.Epoch, false)
	if err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	err = s.seed(ctx, side, rep)
	if err == nil {
		err = side.writeManifest(ctx, info)
	}
	if cerr := side.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("compact: seed epoch %s: %w", info.Epoch, err)
	}
	if err := s.switchEpoch(ctx, info, rep, true); err != nil {
		// What was seeded goes now (else at the next start).
		if _, cerr := s.countAndClear(ctx, prefix(info.Epoch.namespace(s.opts.Namespace))); cerr == nil {
			_ = s.base.Delete(ctx, s.roots.build.ChildString(info.Epoch.String()))
		}
		return nil, fmt.Errorf("compact: %w", err)
	}
	rep.Took = time.Since(start)
	return rep, nil
}

// cutVector walks the DAG from its heads and returns, per writer, the
// newest op of the blocks it reaches. Every block must be here and merged:
// the set is then closed under links, so it holds every op of each writer
// up to that time (see epoch.go). Vouched copies do not count: a move
// brings a writer's write from another channel, newer than writes of that
// writer this channel may not have yet. It keeps only the set of blocks
// seen.
func (s *Store) cutVector(ctx context.Context) (map[string]Timestamp, error) {
	heads := s.eng().InternalStats(ctx).Heads
	processed := s.layout().processed()
	seen := make(map[string]struct{}, 1024)
	stack := slices.Clone(heads)
	cut := map[string]Timestamp{}
	missing, unmerged := 0, 0
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		k := blockKey(c)
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		if !s.hasBlock(ctx, k) {
			missing++
			continue
		}
		if ok, err := s.base.Has(ctx, processed.ChildString(k)); err != nil {
			return nil, err
		} else if !ok {
			unmerged++
		}
		nd, err := s.dag.Get(ctx, c)
		if err != nil {
			missing++
			continue
		}
		for _, l := range nd.Links() {
			stack = append(stack, l.Cid)
		}
		delta, err := decodeDelta(nd)
		if err != nil {
			return nil, err
		}
		for _, e := range delta.GetElements() {
			kp, err := parseOpKey(e.GetKey())
			if err != nil {
				continue
			}
			if v := e.GetValue(); len(v) > 1 && v[1]&(flagVouched|flagCopied) != 0 {
				// A copy an office vouched for (a record moved in from
				// another channel, a write seeded apart from its import
				// batch), or one a move copied in an open network: it
				// came here out of its writer's order, and
				// says nothing of the writer's other writes here (the
				// seeded ones are covered by the previous cut).
				continue
			}
			if kp.Op.Time > cut[kp.Op.Writer] {
				cut[kp.Op.Writer] = kp.Op.Time
			}
		}
	}
	if missing > 0 || unmerged > 0 {
		if missing > 0 && s.Stats(ctx).QueuedJobs == 0 {
			// Nothing is merging, yet blocks below the heads are not
			// here: go-ds-crdt will not ask for them again by itself (a
			// fetch cut short by a kill or a stop). A repair walks the
			// DAG again and asks the peers (node/repair.go).
			s.health.fail(fmt.Sprintf("%d blocks missing below the heads", missing), false)
		}
		return nil, fmt.Errorf("%w: %d blocks missing, %d not merged yet; try again once synced", ErrBusy, missing, unmerged)
	}
	return cut, nil
}

// HistorySize is how much history the current epoch holds.
type HistorySize struct {
	// Writes: every write merged in this epoch (each element go-ds-crdt
	// keeps), Visible: those still shown.
	Writes, Visible int
}

// Ratio is Writes over Visible (1 for a fresh epoch, 0 for an empty one).
func (h HistorySize) Ratio() float64 {
	if h.Visible == 0 {
		return 0
	}
	return float64(h.Writes) / float64(h.Visible)
}

// HistorySize counts the current epoch's writes (a keys-only scan).
func (s *Store) HistorySize(ctx context.Context) (HistorySize, error) {
	var h HistorySize
	var err error
	l := s.layout()
	if h.Writes, err = s.countKeys(ctx, prefix(l.elems()), ""); err != nil {
		return h, fmt.Errorf("history size: %w", err)
	}
	if h.Visible, err = s.countKeys(ctx, prefix(l.values()), "/v"); err != nil {
		return h, fmt.Errorf("history size: %w", err)
	}
	return h, nil
}
