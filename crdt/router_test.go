package crdt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	badger "github.com/ipfs/go-ds-badger"

	"github.com/ferry-crm/ferry/schema"
)

const routedSchema = `
collections:
  contacts:
    channel: {field: territory}
    fields:
      name:      {type: string, required: true}
      email:     {type: string}
      territory: {type: string}
  accounts:
    fields:
      name: {type: string, required: true}
`

// newTestRouter opens, over one datastore, an everyone store and a store
// for each channel, in an open network, with routedSchema applied.
func newTestRouter(t *testing.T, channels ...string) *Router {
	t.Helper()
	ctx := context.Background()
	// Badger, as on a node: a store's scan comes in key order.
	bopts := badger.DefaultOptions
	bopts.SyncWrites = false
	base, err := badger.NewDatastore(t.TempDir(), &bopts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = base.Close() })
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	dag := merkledag.NewDAGService(blockservice.New(bs, offline.Exchange(bs)))
	open := func(channel string, auth *Store) *Store {
		o := DefaultOptions()
		o.Writer = "A"
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		o.RebroadcastInterval = time.Hour
		if channel != "" {
			o.Root, o.Namespace = DefaultRoot.ChildString("ch").ChildString(channel), ds.Key{}
			o.Channel, o.Authority = channel, auth
		}
		s, err := New(ctx, base, dag, nil, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	all := open("", nil)
	sc, err := schema.Parse([]byte(routedSchema))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := all.ApplySchema(ctx, sc); err != nil {
		t.Fatal(err)
	}
	r := NewRouter(all)
	for _, c := range channels {
		if err := r.Add(open(c, all)); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func TestRouterWritesWhereTheRoutingFieldSays(t *testing.T) {
	ctx := context.Background()
	r := newTestRouter(t, "east", "west", schema.DefaultChannel)
	put := func(id string, f map[string]any) {
		t.Helper()
		if _, err := r.Put(ctx, "contacts", id, f); err != nil {
			t.Fatalf("put %s: %v", id, err)
		}
	}
	put("c1", map[string]any{"name": "Ann", "territory": "east"})
	put("c2", map[string]any{"name": "Bob", "territory": "west"})
	put("c3", map[string]any{"name": "Cid"}) // no territory: the default channel
	if _, err := r.Put(ctx, "accounts", "a1", map[string]any{"name": "Acme"}); err != nil {
		t.Fatal(err)
	}
	where := map[string]string{"c1": "east", "c2": "west", "c3": schema.DefaultChannel}
	for id, ch := range where {
		for _, other := range r.Held() {
			_, err := r.Channel(other).Get(ctx, "contacts", id)
			if held := err == nil; held != (other == ch) {
				t.Errorf("%s in channel %s: %v, want only in %s", id, other, err, ch)
			}
		}
		if _, err := r.Everyone().Get(ctx, "contacts", id); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s in the everyone store: %v", id, err)
		}
	}
	if _, err := r.Everyone().Get(ctx, "accounts", "a1"); err != nil {
		t.Errorf("unrouted record not in the everyone store: %v", err)
	}
	// Reads through the router find each record where it is.
	for id := range where {
		if rec, err := r.Get(ctx, "contacts", id); err != nil || rec.ID != id {
			t.Errorf("router get %s: %v %v", id, rec, err)
		}
	}
	// An edit without the routing field stays in the record's channel.
	put("c1", map[string]any{"email": "ann@example.com"})
	if rec, err := r.Channel("east").Get(ctx, "contacts", "c1"); err != nil || rec.Fields["email"].Value != "ann@example.com" {
		t.Errorf("edit of c1 not in east: %v %v", rec, err)
	}
	// A bad channel name in the routing field is refused, writing nothing.
	if _, err := r.Put(ctx, "contacts", "c4", map[string]any{"name": "Dee", "territory": "West Coast"}); err == nil {
		t.Error("a routing value that is no channel name was accepted")
	}
	// A channel not held here is refused.
	if _, err := r.Put(ctx, "contacts", "c5", map[string]any{"name": "Eve", "territory": "north"}); !errors.Is(err, ErrChannelNotHeld) {
		t.Errorf("write into a channel not held: %v, want ErrChannelNotHeld", err)
	}
	for _, id := range []string{"c4", "c5"} {
		if _, err := r.Get(ctx, "contacts", id); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s after a refused write: %v", id, err)
		}
	}
	// Delete finds the record's channel.
	if _, err := r.Delete(ctx, "contacts", "c2"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Channel("west").Get(ctx, "contacts", "c2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("c2 after delete: %v", err)
	}
}

func TestRouterListsAcrossChannelsInKeyOrderOnce(t *testing.T) {
	ctx := context.Background()
	r := newTestRouter(t, "east", "west")
	// Ids whose key order differs from their string order ("a-b/" < "a/").
	ids := map[string]string{"a": "east", "a-b": "west", "b": "west", "c": "east", "d-1": "east", "d": "west"}
	for id, ch := range ids {
		if _, err := r.Put(ctx, "contacts", id, map[string]any{"name": id, "territory": ch}); err != nil {
			t.Fatal(err)
		}
	}
	// The same id in both channels (created in each by nodes offline): shown
	// once, the copy at home (its routing value names its channel).
	if _, err := r.Channel("west").Put(ctx, "contacts", "dup", map[string]any{"name": "west copy", "territory": "west"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Channel("east").Put(ctx, "contacts", "dup", map[string]any{"name": "east copy, newer, not at home", "territory": "west"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	var dupName any
	if err := r.List(ctx, "contacts", func(rec *Record) error {
		got = append(got, rec.ID)
		if rec.ID == "dup" {
			dupName = rec.Fields["name"].Value
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The key order of one store, over every id.
	var want []string
	for id := range ids {
		want = append(want, id)
	}
	want = append(want, "dup")
	slices.SortFunc(want, func(a, b string) int {
		ea, _ := EscapeID(a)
		eb, _ := EscapeID(b)
		return compareStrings(ea+"/", eb+"/")
	})
	if !slices.Equal(got, want) {
		t.Errorf("list = %v, want %v", got, want)
	}
	if dupName != "west copy" {
		t.Errorf("dup shown as %v, want the copy at home", dupName)
	}
	if rec, err := r.Get(ctx, "contacts", "dup"); err != nil || rec.Fields["name"].Value != "west copy" {
		t.Errorf("get dup: %v %v", rec, err)
	}
	// Stopping early stops every channel's scan.
	n := 0
	stop := errors.New("stop")
	if err := r.List(ctx, "contacts", func(*Record) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	}); !errors.Is(err, stop) || n != 2 {
		t.Errorf("early stop: n=%d err=%v", n, err)
	}
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestRouterImportSplitsByChannel(t *testing.T) {
	ctx := context.Background()
	r := newTestRouter(t, "east", "west", schema.DefaultChannel)
	if _, err := r.Put(ctx, "contacts", "old", map[string]any{"name": "Old", "territory": "west"}); err != nil {
		t.Fatal(err)
	}
	var recs []ImportRecord
	for i := range 300 {
		f := map[string]any{"name": fmt.Sprintf("n%d", i)}
		switch i % 3 {
		case 0:
			f["territory"] = "east"
		case 1:
			f["territory"] = "west"
		}
		recs = append(recs, ImportRecord{Line: i + 2, ID: fmt.Sprintf("c%03d", i), Fields: f})
	}
	// The record held in west stays there although its line says east.
	recs = append(recs, ImportRecord{Line: 302, ID: "old", Fields: map[string]any{"name": "Old 2", "territory": "east"}})
	lastDone := 0
	res, err := r.Import(ctx, "contacts", recs, func(done int) {
		if done < lastDone {
			t.Errorf("progress went back: %d after %d", done, lastDone)
		}
		lastDone = done
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 301 || res.Created != 300 || res.Written != 301 {
		t.Errorf("import result %+v", res)
	}
	if lastDone != 301 {
		t.Errorf("progress ended at %d", lastDone)
	}
	count := func(ch string) int {
		n := 0
		_ = r.Channel(ch).List(ctx, "contacts", func(*Record) error { n++; return nil })
		return n
	}
	if e, w, u := count("east"), count("west"), count(schema.DefaultChannel); e != 100 || w != 101 || u != 100 {
		t.Errorf("east %d, west %d, unassigned %d; want 100, 101, 100", e, w, u)
	}
	if rec, err := r.Channel("west").Get(ctx, "contacts", "old"); err != nil || rec.Fields["name"].Value != "Old 2" {
		t.Errorf("old: %v %v", rec, err)
	}

	// A bad record in one channel's part writes nothing in any channel.
	bad := []ImportRecord{
		{Line: 2, ID: "x1", Fields: map[string]any{"name": "X1", "territory": "east"}},
		{Line: 3, ID: "x2", Fields: map[string]any{"territory": "west"}}, // name is required
	}
	if _, err := r.Import(ctx, "contacts", bad, nil); err == nil {
		t.Fatal("an import with a bad record succeeded")
	}
	if _, err := r.Get(ctx, "contacts", "x1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("x1 written by a failed import: %v", err)
	}
	// Records routed to a channel not held: refused, nothing written.
	north := []ImportRecord{
		{Line: 2, ID: "y1", Fields: map[string]any{"name": "Y1", "territory": "east"}},
		{Line: 3, ID: "y2", Fields: map[string]any{"name": "Y2", "territory": "north"}},
	}
	if _, err := r.Import(ctx, "contacts", north, nil); !errors.Is(err, ErrChannelNotHeld) {
		t.Errorf("import into a channel not held: %v", err)
	}
	if _, err := r.Get(ctx, "contacts", "y1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("y1 written by a refused import: %v", err)
	}
}

func TestRouterConflictsAndHistoryPerChannel(t *testing.T) {
	ctx := context.Background()
	r := newTestRouter(t, "east", "west")
	for _, v := range []string{"a@x", "b@x", "c@x"} {
		if _, err := r.Put(ctx, "contacts", "w1", map[string]any{"name": "W", "territory": "west", "email": v}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := r.History(ctx, "contacts", "w1", "email")
	if err != nil || len(h) != 3 {
		t.Fatalf("history of w1.email: %d entries, %v", len(h), err)
	}
	if h, err := r.History(ctx, "contacts", "nobody", "email"); err != nil || len(h) != 0 {
		t.Errorf("history of a record nowhere: %v %v", h, err)
	}
	n := 0
	if err := r.Conflicts(ctx, nil, func(Conflict) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("conflicts: %d %v", n, err)
	}
	if cs, err := r.RecordConflicts(ctx, "contacts", "w1"); err != nil || len(cs) != 0 {
		t.Errorf("record conflicts of w1: %v %v", cs, err)
	}
}

func TestMoveCarriesFieldsHistoryAndStragglers(t *testing.T) {
	ctx := context.Background()
	r := newTestRouter(t, "east", "west")
	east, west := r.Channel("east"), r.Channel("west")
	for _, v := range []string{"a@x", "b@x"} {
		if _, err := r.Put(ctx, "contacts", "c1", map[string]any{"name": "Ann", "territory": "east", "email": v}); err != nil {
			t.Fatal(err)
		}
	}
	// The routing field names west: the record stays in east until moved.
	if _, err := r.Put(ctx, "contacts", "c1", map[string]any{"territory": "west"}); err != nil {
		t.Fatal(err)
	}
	if _, err := east.Get(ctx, "contacts", "c1"); err != nil {
		t.Fatalf("c1 left east before any move: %v", err)
	}
	var misplaced []string
	collect := func() {
		misplaced = nil
		if err := east.Misplaced(ctx, func(coll, id, to string) error {
			misplaced = append(misplaced, coll+"/"+id+"->"+to)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	collect()
	if len(misplaced) != 1 || misplaced[0] != "contacts/c1->west" {
		t.Fatalf("misplaced = %v", misplaced)
	}
	res, err := east.Move(ctx, west, "contacts", "c1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied < 3 {
		t.Errorf("copied %d writes, want every write of c1 (3 or more)", res.Copied)
	}
	var mv *MovedError
	if _, err := east.Get(ctx, "contacts", "c1"); !errors.As(err, &mv) || mv.To != "west" || !errors.Is(err, ErrNotFound) {
		t.Errorf("c1 in east after the move: %v", err)
	}
	rec, err := west.Get(ctx, "contacts", "c1")
	if err != nil || rec.Fields["email"].Value != "b@x" || rec.Fields["name"].Value != "Ann" || rec.Fields["territory"].Value != "west" {
		t.Fatalf("c1 in west: %+v %v", rec, err)
	}
	h, err := r.History(ctx, "contacts", "c1", "email")
	if err != nil || len(h) != 2 {
		t.Errorf("history of c1.email after the move: %d entries, %v", len(h), err)
	}
	// Shown once through the router, from west.
	n := 0
	_ = r.List(ctx, "contacts", func(rec *Record) error {
		if rec.ID == "c1" {
			n++
		}
		return nil
	})
	if n != 1 {
		t.Errorf("c1 listed %d times", n)
	}
	collect()
	if len(misplaced) != 0 {
		t.Errorf("misplaced after the move: %v", misplaced)
	}
	// A write the move did not see (an east-only laptop offline) is carried
	// by the next move.
	if _, err := east.Put(ctx, "contacts", "c1", map[string]any{"name": "Ann", "email": "late@x"}); err != nil {
		t.Fatal(err)
	}
	collect()
	if len(misplaced) != 1 {
		t.Fatalf("straggler not found: %v", misplaced)
	}
	if _, err := east.Move(ctx, west, "contacts", "c1"); err != nil {
		t.Fatal(err)
	}
	if rec, err := west.Get(ctx, "contacts", "c1"); err != nil || rec.Fields["email"].Value != "late@x" {
		t.Errorf("straggler not carried: %+v %v", rec, err)
	}
	collect()
	if len(misplaced) != 0 {
		t.Errorf("misplaced after carrying the straggler: %v", misplaced)
	}
	// And back to east.
	if _, err := r.Put(ctx, "contacts", "c1", map[string]any{"territory": "east"}); err != nil {
		t.Fatal(err)
	}
	if _, err := west.Move(ctx, east, "contacts", "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := west.Get(ctx, "contacts", "c1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("c1 still in west: %v", err)
	}
	if rec, err := r.Get(ctx, "contacts", "c1"); err != nil || rec.Fields["email"].Value != "late@x" || rec.Fields["territory"].Value != "east" {
		t.Errorf("c1 back in east: %+v %v", rec, err)
	}
}

// TestMovedThenDeletedStaysGoneAfterTheTargetCompacts: a record moved to
// west, then deleted there, stays gone on a node holding both channels
// once west is compacted: the move's heads, of west's older epoch, are
// never merged in its new one, and must not bring the old copy back.
func TestMovedThenDeletedStaysGoneAfterTheTargetCompacts(t *testing.T) {
	ctx := context.Background()
	r := newTestRouter(t, "east", "west")
	east, west := r.Channel("east"), r.Channel("west")
	if _, err := r.Put(ctx, "contacts", "c1", map[string]any{"name": "Ann", "territory": "east"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Put(ctx, "contacts", "c1", map[string]any{"territory": "west"}); err != nil {
		t.Fatal(err)
	}
	if _, err := east.Move(ctx, west, "contacts", "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Delete(ctx, "contacts", "c1"); err != nil {
		t.Fatal(err)
	}
	gone := func(when string) {
		t.Helper()
		if rec, err := r.Get(ctx, "contacts", "c1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: c1 shows again: %+v %v", when, rec, err)
		}
		_ = r.List(ctx, "contacts", func(rec *Record) error {
			if rec.ID == "c1" {
				t.Errorf("%s: c1 listed again", when)
			}
			return nil
		})
	}
	gone("after the delete")
	if _, err := west.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	gone("after west's compaction")
}

// TestHistoryOfARecordDeletedThenCreatedInAnotherChannel: the history of a
// record id holds what every channel knows of it, once each, oldest first.
func TestHistoryOfARecordDeletedThenCreatedInAnotherChannel(t *testing.T) {
	ctx := context.Background()
	r := newTestRouter(t, "east", "west")
	if _, err := r.Put(ctx, "contacts", "c1", map[string]any{"name": "Ann", "territory": "east"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Delete(ctx, "contacts", "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Put(ctx, "contacts", "c1", map[string]any{"name": "Bob", "territory": "west"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Channel("west").Get(ctx, "contacts", "c1"); err != nil {
		t.Fatalf("c1 not created again in west: %v", err)
	}
	h, err := r.History(ctx, "contacts", "c1", "")
	if err != nil {
		t.Fatal(err)
	}
	var names []any
	deletes := 0
	for _, e := range h {
		switch e.Field {
		case "name":
			names = append(names, e.Value)
		case DeleteField:
			deletes++
		}
	}
	if fmt.Sprint(names) != "[Ann Bob]" || deletes != 1 {
		t.Errorf("history of c1: names %v, %d deletes; want [Ann Bob] and the delete", names, deletes)
	}
}
