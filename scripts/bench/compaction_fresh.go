package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
)

// The compaction benchmark (compaction.go): fresh nodes catching up and
// clean-syncing from an office, compacted or not.

// catchUpRun is a fresh node catching up with an office.
type catchUpRun struct {
	// heads: from the fresh node's start until its heads first equal the
	// office's (and it is in the office's epoch); sync: until its contacts
	// also show the office's (digest), converged.
	heads, sync        time.Duration
	headsEq, converged bool
	bulk               int64 // blocks fetched in bulk
	// listed: contacts the fresh node lists at the end; ignored: the
	// operations it does not show, by reason (crdt.Store.Ignored).
	listed  int
	ignored map[string]int
}

// compactionCatchUpGrace is how long a fresh node whose heads equal the
// office's is given to show the office's contacts too before it is
// reported as not converged.
const compactionCatchUpGrace = 10 * time.Second

// compactionCatchUp starts the office dir name on the network and times a
// fresh node (bulk block sync, the office its only peer) until it is in
// epoch ep with the office's heads and contacts (digest) (as the catchup
// benchmark's syncFresh, polled every pollEvery), then checks its contacts
// against want. A fresh node whose heads equal the office's but whose
// contacts still differ after compactionCatchUpGrace is reported as not
// converged, with what it ignores. onEpoch is told of its epoch changes.
func (e *env) compactionCatchUp(ctx context.Context, name, freshName string, want map[string]map[string]any, ep crdt.Epoch, onEpoch func(crdt.EpochReport)) (r catchUpRun, err error) {
	office, err := e.startOffice(ctx, name)
	if err != nil {
		return r, err
	}
	defer closeNode(office, &err)
	stop := e.profile(freshName)
	defer stop()
	t0 := time.Now()
	b, err := e.startNode(ctx, nodeSpec{name: freshName, network: true, peers: office.Addrs()[:1], founder: compOffice, onEpoch: onEpoch})
	if err != nil {
		return r, err
	}
	defer closeNode(b, &err)
	wctx, cancel := context.WithTimeout(ctx, e.cfg.catchupTimeout)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	lastReport := time.Now()
	status := ""
	for {
		report := time.Since(lastReport) >= progressEvery
		ok, st, err := converged(ctx, office, b, report || r.headsEq)
		if err != nil {
			return r, err
		}
		status = st
		inEpoch := b.Store().Everyone().Epoch() == ep
		headsEq := inEpoch && slices.Equal(sortedHeads(office.Store().Everyone().Stats(ctx).Heads), sortedHeads(b.Store().Everyone().Stats(ctx).Heads))
		switch {
		case ok && inEpoch:
			r.sync, r.converged = time.Since(t0), true
			if !r.headsEq {
				r.heads, r.headsEq = r.sync, true
			}
		case headsEq && !r.headsEq:
			r.heads, r.headsEq = time.Since(t0), true
		case !headsEq:
			r.headsEq = false // the office's heads moved on (the fresh node's own writes)
		}
		if r.converged {
			stop()
			e.progress("%s: converged after %s (%s)", freshName, fmtDur(r.sync), status)
			break
		}
		if r.headsEq && time.Since(t0)-r.heads >= compactionCatchUpGrace {
			r.sync = time.Since(t0)
			stop()
			e.progress("%s: heads equal after %s, but the contacts still differ %s later: %s", freshName, fmtDur(r.heads), compactionCatchUpGrace, status)
			break
		}
		if report {
			lastReport = time.Now()
			e.progress("%s: %s, not converged: %s; fresh node in epoch %s", freshName, fmtDur(time.Since(t0)), status, b.Store().Everyone().Epoch())
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			r.sync = time.Since(t0)
			stop()
			e.progress("%s: gave up after %s: %s", freshName, fmtDur(r.sync), status)
			return r, e.describeFresh(ctx, b, &r)
		case <-tick.C:
		}
	}
	if err := e.describeFresh(ctx, b, &r); err != nil {
		return r, err
	}
	if !r.converged {
		return r, nil
	}
	if got := b.Store().Everyone().Epoch(); got != ep {
		return r, fmt.Errorf("%s: fresh node in epoch %s, want %s", freshName, got, ep)
	}
	return r, checkState(ctx, b.Store().Everyone(), want)
}

// describeFresh records what a fresh node shows: blocks fetched in bulk,
// contacts listed, operations ignored by reason.
func (e *env) describeFresh(ctx context.Context, b *node.Node, r *catchUpRun) error {
	r.bulk = b.Status(ctx).BlocksFetched
	if _, n, err := digestContacts(ctx, b.Store().Everyone()); err != nil {
		return err
	} else {
		r.listed = n
	}
	ig, err := b.Store().Everyone().Ignored(ctx)
	if err != nil {
		return err
	}
	r.ignored = map[string]int{}
	for _, op := range ig {
		r.ignored[op.Reason]++
	}
	return nil
}

// startOffice starts the office dir name on the network (loopback TCP) and
// waits for its first digest (it reads the whole store), so that it does
// not compete with a fresh node's catch-up.
func (e *env) startOffice(ctx context.Context, name string) (*node.Node, error) {
	office, err := e.startNode(ctx, nodeSpec{name: name, network: true, role: node.RoleOffice, founder: compOffice})
	if err != nil {
		return nil, err
	}
	if err := waitDigest(ctx, office); err != nil {
		_ = office.Close()
		return nil, fmt.Errorf("%s digest: %w", name, err)
	}
	return office, nil
}

// cleanRun is a clean sync of a fresh node from an office.
type cleanRun struct {
	res  node.CleanSyncResult
	wall time.Duration
	// sent: bytes the office sent the new node (its per-peer counter).
	sent int64
	disk sizes // the new node's data dir afterwards
}

// compactionCleanSync starts the office dir name on the network and times
// node.CleanSync of a fresh node from it; the fresh node is then started
// (network off) and checked: epoch ep, same heads, the expected contacts.
func (e *env) compactionCleanSync(ctx context.Context, name, freshName string, want map[string]map[string]any, ep crdt.Epoch) (r cleanRun, err error) {
	office, err := e.startOffice(ctx, name)
	if err != nil {
		return r, err
	}
	defer closeNode(office, &err)
	cctx, cancel := context.WithTimeout(ctx, e.cfg.cleanTimeout)
	defer cancel()
	stop := e.profile(freshName)
	t0 := time.Now()
	r.res, err = e.cleanSync(cctx, nodeSpec{name: freshName, network: true, peers: office.Addrs()[:1], founder: compOffice}, nil)
	r.wall = time.Since(t0)
	stop()
	if err != nil {
		return r, err
	}
	freshID, err := e.peerID(freshName)
	if err != nil {
		return r, err
	}
	if r.sent, _, err = peerBytes(ctx, office, freshID); err != nil {
		return r, err
	}
	oh, err := office.Store().Everyone().Heads(ctx)
	if err != nil {
		return r, err
	}
	err = e.withNode(ctx, nodeSpec{name: freshName, founder: compOffice}, func(fresh *node.Node) error {
		if got := fresh.Store().Everyone().Epoch(); got != ep {
			return fmt.Errorf("%s: clean-synced node in epoch %s, want %s", freshName, got, ep)
		}
		fh, err := fresh.Store().Everyone().Heads(ctx)
		if err != nil {
			return err
		}
		if !slices.Equal(sortedHeads(fh), sortedHeads(oh)) {
			return fmt.Errorf("%s: after clean sync the heads %v differ from the office's %v", freshName, sortedHeads(fh), sortedHeads(oh))
		}
		return checkState(ctx, fresh.Store().Everyone(), want)
	})
	if err != nil {
		return r, err
	}
	if r.disk, err = dirSize(filepath.Join(e.root, freshName)); err != nil {
		return r, err
	}
	e.progress("compaction: %s: clean sync took %s (%d entries, %s; then %d blocks); %s sent",
		freshName, fmtDur(r.res.Took), r.res.Entries, fmtBytes(r.res.Bytes), r.res.Blocks, fmtBytes(r.sent))
	return r, nil
}
