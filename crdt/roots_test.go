package crdt

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	badger "github.com/ipfs/go-ds-badger"

	"github.com/ferry-crm/ferry/schema"
)

// TestStoresUnderTwoRoots: two stores over one datastore, one at the
// default root and one under /ferry/ch/east (a channel's), keep every key
// apart: writing, compacting and reopening one leaves the other whole.
func TestStoresUnderTwoRoots(t *testing.T) {
	ctx := context.Background()
	opts := badger.DefaultOptions
	opts.SyncWrites = false
	base, err := badger.NewDatastore(t.TempDir(), &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = base.Close() })
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	dag := merkledag.NewDAGService(blockservice.New(bs, offline.Exchange(bs)))
	east := ds.NewKey("/ferry/ch/east")
	open := func(root ds.Key) *Store {
		o := DefaultOptions()
		o.Writer = "A"
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		o.RebroadcastInterval = time.Hour
		if root != (ds.Key{}) {
			o.Root, o.Namespace = root, ds.Key{}
		}
		s, err := New(ctx, base, dag, nil, o)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	all, ch := open(ds.Key{}), open(east)
	sc, err := schema.Parse([]byte(testSchema))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Store{all, ch} {
		if _, err := s.ApplySchema(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range []*Store{all, all, ch, ch} {
		id := []string{"a1", "a2", "e1", "e2"}[i]
		for v := range 3 {
			if _, err := s.Put(ctx, "contacts", id, map[string]any{"last_name": id, "phone": string(rune('0' + v))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	keysUnder := func(p string) int {
		res, err := base.Query(ctx, query.Query{Prefix: p, KeysOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		es, _ := res.Rest()
		return len(es)
	}
	before := keysUnder(east.String() + "/")
	if before == 0 {
		t.Fatal("the channel store wrote nothing under its root")
	}
	for _, s := range []*Store{all, ch} {
		rep, err := s.Compact(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.DroppedKeys == 0 {
			t.Fatalf("compaction dropped nothing: %+v", rep)
		}
		if s == all && keysUnder(east.String()+"/") != before {
			t.Fatalf("compacting the default root changed the channel's keys: %d, was %d", keysUnder(east.String()+"/"), before)
		}
	}
	// Epoch keys and the history archive are the store's own.
	if ok, err := base.Has(ctx, east.ChildString("epoch").ChildString("current")); err != nil || !ok {
		t.Errorf("no epoch manifest under the channel's root: %v %v", ok, err)
	}
	if keysUnder(east.String()+"/history/contacts/") == 0 {
		t.Errorf("no history archive under the channel's root")
	}
	if err := all.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	all, ch = open(ds.Key{}), open(east)
	defer all.Close()
	defer ch.Close()
	if all.Epoch().Number != 1 || ch.Epoch().Number != 1 || all.Epoch() == ch.Epoch() {
		t.Fatalf("epochs after reopening: %s and %s", all.Epoch(), ch.Epoch())
	}
	for s, ids := range map[*Store][]string{all: {"a1", "a2"}, ch: {"e1", "e2"}} {
		for _, id := range ids {
			rec, err := s.Get(ctx, "contacts", id)
			if err != nil || rec.Values()["phone"] != "2" {
				t.Fatalf("%s: %v %v", id, rec, err)
			}
		}
		other := "e1"
		if s == ch {
			other = "a1"
		}
		if _, err := s.Get(ctx, "contacts", other); err == nil {
			t.Errorf("%s shows in the other store", other)
		}
	}
	// Nothing of the channel store outside its root but go-ds-crdt-free
	// node-wide keys (clock, format).
	res, err := base.Query(ctx, query.Query{KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	es, _ := res.Rest()
	for _, e := range es {
		if strings.Contains(e.Key, "/ch/") && !strings.HasPrefix(e.Key, east.String()+"/") {
			t.Errorf("stray key %s", e.Key)
		}
	}
}

// TestApplySchemaAcceptsChannelRouting: the store accepts a schema that
// routes a collection (the node decides whether it may be applied yet),
// keeps the routing, applies it again as a no-op, and refuses to change
// it (destructive).
func TestApplySchemaAcceptsChannelRouting(t *testing.T) {
	ctx := context.Background()
	n := newTestNet(t, 2)
	a := n.replicas[0]
	routed := testSchema + "  deals:\n    channel: {field: region, default: hq}\n    fields: {region: {type: string}}\n"
	sc, err := schema.Parse([]byte(routed))
	if err != nil {
		t.Fatal(err)
	}
	changed, err := a.ApplySchema(ctx, sc)
	if err != nil || !slices.Contains(changed, "deals") {
		t.Fatalf("apply a routed schema: %v %v", changed, err)
	}
	n.waitConverged(10 * time.Second)
	for _, r := range n.all() {
		c, err := r.Collection(ctx, "deals")
		if err != nil || c.Channel == nil || *c.Channel != (schema.Routing{Field: "region", Default: "hq"}) {
			t.Fatalf("%s: deals %+v %v", r.writer, c, err)
		}
	}
	if changed, err := a.ApplySchema(ctx, sc); err != nil || len(changed) != 0 {
		t.Errorf("apply again: %v %v", changed, err)
	}
	other, err := schema.Parse([]byte(strings.Replace(routed, "default: hq", "default: main", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ApplySchema(ctx, other); err == nil {
		t.Error("a routing change was applied")
	}
}
