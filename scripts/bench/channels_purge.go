package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/ondisk"
	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/datadir"
)

// Channels, part 1b: what a laptop holds before and after its grant ends.
// The laptop that clean-synced one channel starts again with the office as
// its peer; the office ungrants it that channel; the laptop hands over
// (nothing: it made no edit), purges the channel, rotates badger's value
// log and runs GC. Measured: the contacts it shows and its store (files,
// bytes) before and after, how long the purge and the erasure took, and in
// how many of its store's files one value of the channel (a contact's
// email) could be found.

// purgeTimeout bounds the wait for the purge and the erasure.
const purgeTimeout = 5 * time.Minute

type chanPurgeRun struct {
	channel                 string
	contactsBefore, after   int
	before, stopped         storeSizes
	filesBefore, filesAfter int
	purged, erased          time.Duration
	keysAfter               chanKeys
	marker                  string
}

func (e *env) chanPurge(ctx context.Context, office *node.Node, lap chanNode, recs []crdt.ImportRecord) (r chanPurgeRun, err error) {
	r.channel = lap.channels[0]
	for _, rec := range recs {
		if rec.Fields["territory"] != r.channel {
			continue
		}
		if v, ok := rec.Fields["email"].(string); ok && v != "" {
			r.marker = v
			break
		}
	}
	if r.marker == "" {
		return r, fmt.Errorf("purge: no contact of %s with an email", r.channel)
	}
	dir := filepath.Join(e.root, lap.spec.name)
	storeDir := filepath.Join(dir, datadir.StoreDir)
	spec := lap.spec
	spec.peers = office.Addrs()[:1]
	l, err := e.startChanNode(ctx, chanNode{spec: spec, channels: lap.channels})
	if err != nil {
		return r, err
	}
	defer closeNode(l, &err)
	if err := waitHeld(ctx, l, lap.channels); err != nil {
		return r, err
	}
	if r.contactsBefore, err = countContacts(ctx, l); err != nil {
		return r, err
	}
	if r.before, err = storeSize(storeDir); err != nil {
		return r, err
	}
	found, err := ondisk.FilesHolding(storeDir, r.marker)
	if err != nil {
		return r, err
	}
	r.filesBefore = len(found)
	id, err := e.peerID(lap.spec.name)
	if err != nil {
		return r, err
	}
	e.progress("channels: %s holds %d contacts of %s, store %s: the office ends its grant", lap.spec.name, r.contactsBefore, r.channel, r.before)
	start := time.Now()
	if err := office.Store().Everyone().Ungrant(ctx, id.String(), r.channel); err != nil {
		return r, err
	}
	wctx, cancel := context.WithTimeout(ctx, purgeTimeout)
	defer cancel()
	gone := func() (bool, error) {
		cs, err := l.Channels(wctx)
		if err != nil {
			return false, err
		}
		for _, ch := range cs.Held {
			if ch.Name == r.channel {
				return false, nil
			}
		}
		return true, nil
	}
	if err := pollUntil(wctx, gone); err != nil {
		return r, fmt.Errorf("%s: channel %s not purged: %w", lap.spec.name, r.channel, err)
	}
	r.purged = time.Since(start)
	erased := func() (bool, error) {
		found, err := ondisk.FilesHolding(storeDir, r.marker)
		r.filesAfter = len(found)
		return len(found) == 0, err
	}
	if err := pollUntil(wctx, erased); err != nil {
		e.progress("channels: %s: a value of %s is still in %d files after %s", lap.spec.name, r.channel, r.filesAfter, fmtDur(time.Since(start)))
	} else {
		r.erased = time.Since(start)
	}
	if r.after, err = countContacts(ctx, l); err != nil {
		return r, err
	}
	if err := l.Close(); err != nil {
		return r, err
	}
	if r.stopped, err = storeSize(storeDir); err != nil {
		return r, err
	}
	if r.keysAfter, err = countChanKeys(ctx, dir); err != nil {
		return r, err
	}
	e.progress("channels: %s: purged %s in %s, erased from its files in %s; %d contacts left; store %s (stopped); keys %s",
		lap.spec.name, r.channel, fmtDur(r.purged), fmtDur(r.erased), r.after, r.stopped, r.keysAfter)
	return r, nil
}

// countContacts counts the contacts a node shows.
func countContacts(ctx context.Context, n *node.Node) (int, error) {
	c := 0
	err := n.Store().List(ctx, "contacts", func(*crdt.Record) error { c++; return nil })
	return c, err
}

// pollUntil calls cond every 50 ms until it is true, fails, or ctx ends.
func pollUntil(ctx context.Context, cond func() (bool, error)) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// rows of the purge.
func (r chanPurgeRun) rows() []row {
	erased := "not within " + fmtDur(purgeTimeout)
	if r.filesAfter == 0 {
		erased = fmtDur(r.erased) + " after the ungrant"
	}
	return []row{
		{fmt.Sprintf("channels: a laptop holding one channel (%s) whose grant ends: its store before vs after the purge (stopped; contacts shown; files of the store holding a value of the channel)", r.channel),
			fmt.Sprintf("after: %s (%d contacts; %d keys of %s; %d files hold a value of it; purged %s, erased from the files %s)",
				fmtBytes(r.stopped.total().bytes), r.after, r.keysAfter.countOf(r.channel), r.channel, r.filesAfter, fmtDur(r.purged), erased),
			fmt.Sprintf("before: %s (%d contacts; %d files hold a value of it)", fmtBytes(r.before.total().bytes), r.contactsBefore, r.filesBefore),
			fmtSmallRatio(float64(r.stopped.total().bytes), float64(r.before.total().bytes))},
	}
}

func (r chanPurgeRun) note(name string) string {
	return fmt.Sprintf("Channels, purge: %s (clean-synced above) is started again with the office as its peer; once it holds %s, the office ungrants it (Store.Ungrant on its everyone store, what `ferry ungrant` does). The laptop made no edit, so the hand-over has nothing to send; it then purges %s (DropPrefix behind a marker), starts a new badger value-log file and runs GC (Reclaim). Before: %d contacts, store %s (running). After: %d contacts, store %s (stopped), %s. The value looked for in the store's files is the email of one contact of %s (%q), found in %d files before and %d after.",
		name, r.channel, r.channel, r.contactsBefore, r.before, r.after, r.stopped, r.keysAfter, r.channel, r.marker, r.filesBefore, r.filesAfter)
}

// countOf returns the keys of one channel.
func (k chanKeys) countOf(channel string) int {
	if a := k.perChannel[channel]; a != nil {
		return a.count
	}
	return 0
}
