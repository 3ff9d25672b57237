package crdt

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	badger "github.com/ipfs/go-ds-badger"

	"github.com/ferry-crm/ferry/schema"
)

// BenchmarkPutUnique measures Put of a new record with a unique value on a
// collection of 1,000 and of 20,000 records: with the unique index, the
// time per Put does not grow with the collection (it used to scan it).
func BenchmarkPutUnique(b *testing.B) {
	for _, size := range []int{1000, 20000} {
		b.Run(fmt.Sprintf("records=%d", size), func(b *testing.B) {
			s := openBenchStore(b, size)
			ctx := context.Background()
			put := func(i int) {
				id := fmt.Sprintf("new%d", i)
				if _, err := s.Put(ctx, "contacts", id, map[string]any{"last_name": "N", "email": id + "@x"}); err != nil {
					b.Fatal(err)
				}
			}
			put(-1) // brings the index up to date after the import
			builds := s.unique.builds
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				put(i)
			}
			b.StopTimer()
			if n := s.unique.builds - builds; n != 0 {
				b.Fatalf("the unique index was built %d times by %d writes, want none", n, b.N)
			}
		})
	}
}

// openBenchStore opens a store without network on badger and imports n
// contacts with distinct emails.
func openBenchStore(b *testing.B, n int) *Store {
	b.Helper()
	ctx := context.Background()
	opts := badger.DefaultOptions
	opts.SyncWrites = false
	opts.GcInterval = 0
	base, err := badger.NewDatastore(b.TempDir(), &opts)
	if err != nil {
		b.Fatal(err)
	}
	bstore := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	dag := merkledag.NewDAGService(blockservice.New(bstore, offline.Exchange(bstore)))
	o := DefaultOptions()
	o.Writer = "A"
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(ctx, base, dag, nil, o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		s.Close()
		base.Close()
	})
	sc, err := schema.Parse([]byte(testSchema))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.ApplySchema(ctx, sc); err != nil {
		b.Fatal(err)
	}
	recs := make([]ImportRecord, n)
	for i := range recs {
		id := fmt.Sprintf("c%d", i)
		recs[i] = ImportRecord{Line: i + 1, ID: id, Fields: map[string]any{"last_name": "L", "email": id + "@x"}}
	}
	if _, err := s.Import(ctx, "contacts", recs, nil); err != nil {
		b.Fatal(err)
	}
	return s
}
