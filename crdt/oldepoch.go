package crdt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
)

// Merging the DAG of an older epoch: a laptop whose grant of a channel
// ended while it was away across a compaction of that channel can no longer
// fetch the new epoch and carry its edits over itself (an adoption needs
// the channel). It hands its old-epoch DAG to an office instead, which
// merges it into a side store of its own namespace and carries what the
// current epoch's cut does not cover, exactly as an adoption carries a
// laptop's edits (carry.go), then drops that namespace and those blocks.

// ErrNotOlderEpoch is returned by MergeOldEpoch for heads of the current
// epoch or a later one.
var ErrNotOlderEpoch = errors.New("not an older epoch than this node's")

// ErrBlocksMissing: a block below the heads of an old epoch to merge is
// not held here (the merge of another node's DAG of that epoch, just
// before, dropped the blocks they shared): its sender must send them all.
var ErrBlocksMissing = errors.New("blocks missing below the heads")

// refeed is how often the heads of a DAG being merged into a side store
// are handed to go-ds-crdt again (a block fetch that timed out is not
// retried by it).
const refeed = 5 * time.Second

// MergeOldEpoch merges the DAG below heads, of epoch ep older than the
// store's, and carries into the current epoch every write of it the
// current cut does not cover. Every block below heads must be in the
// store's block store already (nothing is fetched from peers that no
// longer serve it: the wait ends with ctx). Running it again with the same
// heads carries nothing twice.
func (s *Store) MergeOldEpoch(ctx context.Context, ep Epoch, heads []cid.Cid) (*EpochReport, error) {
	if s.opts.side != nil {
		return nil, errors.New("merge an old epoch: not on a side store")
	}
	s.epochs.change.Lock()
	defer s.epochs.change.Unlock()
	info := s.EpochInfo()
	if !s.Epoch().After(ep) {
		return nil, fmt.Errorf("merge epoch %s: %w", ep, ErrNotOlderEpoch)
	}
	// Checked under the lock: a merge of the same epoch that ran while
	// this one waited dropped its blocks, which this DAG may share; the
	// merge would then wait for them from the network, where its sender
	// no longer serves them (chaos seed 0x29).
	if missing, err := s.BlocksMissingBelow(ctx, heads); err != nil {
		return nil, fmt.Errorf("merge epoch %s: %w", ep, err)
	} else if missing {
		return nil, fmt.Errorf("merge epoch %s: %w", ep, ErrBlocksMissing)
	}
	// Its own namespace, marked to be dropped first: a kill half-way
	// leaves nothing behind after the next start (resumeDrops).
	name := "merge-" + ep.String()
	ns := ds.RawKey(s.opts.Namespace.String() + "-" + name)
	if err := s.base.Put(ctx, s.roots.drop.ChildString(name), []byte(ns.String())); err != nil {
		return nil, fmt.Errorf("merge epoch %s: %w", ep, err)
	}
	rep := &EpochReport{Epoch: s.Epoch(), Prev: ep}
	start := time.Now()
	err := s.mergeOldEpoch(ctx, ep, ns, heads, info, rep)
	keys, blocks, derr := s.dropEpoch(context.WithoutCancel(ctx), name, ns)
	rep.DroppedKeys, rep.DroppedBlocks = keys, blocks
	if derr != nil {
		s.log.Warn("dropping a merged old epoch did not finish; tried again at the next start", "epoch", ep, "err", derr)
	}
	if err != nil {
		return nil, fmt.Errorf("merge epoch %s: %w", ep, err)
	}
	rep.Took = time.Since(start)
	s.log.Info("merged an older epoch's DAG", "epoch", ep, "carried", rep.Carried, "facts", rep.Facts)
	return rep, nil
}

func (s *Store) mergeOldEpoch(ctx context.Context, ep Epoch, ns ds.Key, heads []cid.Cid, info *EpochInfo, rep *EpochReport) error {
	side, feed, err := s.openSideAt(ctx, ep, ns, true)
	if err != nil {
		return err
	}
	defer feed.close()
	payload, err := EncodeHeads(heads, ep)
	if err == nil {
		feed.give(payload)
		err = awaitMerged(ctx, side, feed, payload, heads, nil)
	}
	if err == nil {
		// What the side merged is read only: nothing else writes to it.
		side.writeMu.Lock()
		err = side.carry(ctx, s, info, rep)
		side.writeMu.Unlock()
	}
	if cerr := side.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return err
}

// awaitMerged waits until side has merged every block below heads,
// handing it the heads again every few seconds; abort, if set, ends the
// wait early with its error.
func awaitMerged(ctx context.Context, side *Store, feed *feedBroadcaster, payload []byte, heads []cid.Cid, abort func() error) error {
	delay := 10 * time.Millisecond
	next := time.Now().Add(refeed)
	for {
		done, err := side.merged(ctx, heads)
		if err != nil || done {
			return err
		}
		if abort != nil {
			if err := abort(); err != nil {
				return err
			}
		}
		if time.Now().After(next) {
			feed.offer(payload)
			next = time.Now().Add(refeed)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("merge the DAG: %w", ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// BlocksMissingBelow reports whether a block below heads is not held here
// (Options.HasBlock; without it, nothing is known missing). Only blocks
// held are read, so nothing is fetched.
func (s *Store) BlocksMissingBelow(ctx context.Context, heads []cid.Cid) (bool, error) {
	if s.opts.HasBlock == nil {
		return false, nil
	}
	seen := map[cid.Cid]bool{}
	stack := slices.Clone(heads)
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[c] {
			continue
		}
		seen[c] = true
		held, err := s.opts.HasBlock(ctx, c)
		if err != nil {
			return false, err
		}
		if !held {
			return true, nil
		}
		nd, err := s.dag.Get(ctx, c)
		if err != nil {
			return false, err
		}
		for _, l := range nd.Links() {
			stack = append(stack, l.Cid)
		}
	}
	return false, nil
}
