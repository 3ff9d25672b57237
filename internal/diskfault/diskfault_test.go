package diskfault

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	badger "github.com/ipfs/go-ds-badger"
)

// eachBackend runs f against a MapDatastore and against a real badger store.
func eachBackend(t *testing.T, f func(t *testing.T, d ds.Batching)) {
	t.Run("map", func(t *testing.T) {
		f(t, dssync.MutexWrap(ds.NewMapDatastore()))
	})
	t.Run("badger", func(t *testing.T) {
		d, err := badger.NewDatastore(t.TempDir(), &badger.DefaultOptions)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := d.Close(); err != nil {
				t.Errorf("close badger: %v", err)
			}
		})
		f(t, d)
	})
}

func cost(key string, value []byte) int64 { return int64(len(key) + len(value)) }

func mustPut(t *testing.T, d ds.Datastore, key string, value []byte) {
	t.Helper()
	if err := d.Put(context.Background(), ds.NewKey(key), value); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func assertNoSpace(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("write succeeded, want ErrNoSpace")
	}
	if !errors.Is(err, ErrNoSpace) {
		t.Errorf("errors.Is(%v, ErrNoSpace) = false", err)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("errors.Is(%v, syscall.ENOSPC) = false", err)
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) || errno != syscall.ENOSPC {
		t.Errorf("errors.As(%v, *syscall.Errno) = %v, want ENOSPC", err, errno)
	}
	if !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("message %q lacks %q", err, "no space left on device")
	}
}

func assertHas(t *testing.T, d ds.Read, key string, want bool) {
	t.Helper()
	got, err := d.Has(context.Background(), ds.NewKey(key))
	if err != nil {
		t.Fatalf("has %s: %v", key, err)
	}
	if got != want {
		t.Errorf("has %s = %v, want %v", key, got, want)
	}
}

func assertRemaining(t *testing.T, s *Store, prefix string, want int64) {
	t.Helper()
	got, ok := s.Remaining(ds.NewKey(prefix))
	if !ok {
		t.Fatalf("Remaining(%s): no budget", prefix)
	}
	if got != want {
		t.Errorf("Remaining(%s) = %d, want %d", prefix, got, want)
	}
}

func assertRefused(t *testing.T, s *Store, want uint64) {
	t.Helper()
	if got := s.Refused(); got != want {
		t.Errorf("Refused = %d, want %d", got, want)
	}
}

// stored sums len(key)+len(value) of what d holds under prefix.
func stored(t *testing.T, d ds.Read, prefix string) (bytes int64, entries int) {
	t.Helper()
	res, err := d.Query(context.Background(), dsq.Query{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		bytes += cost(e.Key, e.Value)
	}
	return bytes, len(all)
}

func TestErrNoSpace(t *testing.T) {
	if !errors.Is(ErrNoSpace, syscall.ENOSPC) {
		t.Error("errors.Is(ErrNoSpace, syscall.ENOSPC) = false")
	}
	if !strings.Contains(ErrNoSpace.Error(), "no space left on device") {
		t.Errorf("ErrNoSpace = %q", ErrNoSpace)
	}
	if errors.Is(syscall.ENOSPC, ErrNoSpace) {
		t.Error("a real ENOSPC must not count as an injected one")
	}
}

func TestPutOverBudget(t *testing.T) {
	eachBackend(t, func(t *testing.T, d ds.Batching) {
		ctx := context.Background()
		s := Wrap(d)
		if _, ok := s.Remaining(ds.NewKey("/ferry/crdt")); ok {
			t.Fatal("budget before SetBudget")
		}
		mustPut(t, s, "/ferry/crdt/free", []byte("no budget yet"))

		// Room for the first write and 2 bytes more.
		first := cost("/ferry/crdt/a", []byte("hello"))
		s.SetBudget(ds.NewKey("/ferry/crdt"), first+2)
		mustPut(t, s, "/ferry/crdt/a", []byte("hello"))
		assertRemaining(t, s, "/ferry/crdt", 2)

		err := s.Put(ctx, ds.NewKey("/ferry/crdt/b"), []byte("x"))
		assertNoSpace(t, err)
		if want := "write /ferry/crdt/b: no space left on device (diskfault)"; err.Error() != want {
			t.Errorf("message %q, want %q", err, want)
		}
		assertHas(t, s, "/ferry/crdt/b", false)
		assertHas(t, d, "/ferry/crdt/b", false)
		assertRemaining(t, s, "/ferry/crdt", 2)
		assertRefused(t, s, 1)

		// Overwriting an existing key is refused as well, and keeps the old value.
		assertNoSpace(t, s.Put(ctx, ds.NewKey("/ferry/crdt/a"), []byte("bye")))
		if v, err := s.Get(ctx, ds.NewKey("/ferry/crdt/a")); err != nil || string(v) != "hello" {
			t.Errorf("get /ferry/crdt/a = %q, %v; want hello", v, err)
		}
		assertRemaining(t, s, "/ferry/crdt", 2)
		assertRefused(t, s, 2)

		// Keys outside the prefix, by ds.Key semantics, are not limited.
		big := make([]byte, 4096)
		mustPut(t, s, "/ferry/crdtx", big)
		mustPut(t, s, "/ferry/crdtx/y", big)
		mustPut(t, s, "/ferry", big)
		mustPut(t, s, "/other/z", big)
		assertRemaining(t, s, "/ferry/crdt", 2)
		// The prefix key itself is covered.
		assertNoSpace(t, s.Put(ctx, ds.NewKey("/ferry/crdt"), nil))
		assertRefused(t, s, 3)

		// Raising the budget lets the write through, and it is charged exactly.
		s.SetBudget(ds.NewKey("/ferry/crdt"), 100)
		mustPut(t, s, "/ferry/crdt/b", []byte("x"))
		assertRemaining(t, s, "/ferry/crdt", 100-cost("/ferry/crdt/b", []byte("x")))

		// A write that fits exactly is accepted, leaving 0.
		left, _ := s.Remaining(ds.NewKey("/ferry/crdt"))
		key := "/ferry/crdt/c"
		mustPut(t, s, key, make([]byte, left-int64(len(key))))
		assertRemaining(t, s, "/ferry/crdt", 0)

		// A negative budget removes the limit.
		s.SetBudget(ds.NewKey("/ferry/crdt"), -1)
		if _, ok := s.Remaining(ds.NewKey("/ferry/crdt")); ok {
			t.Error("budget still there after SetBudget(-1)")
		}
		mustPut(t, s, "/ferry/crdt/d", big)
		assertRefused(t, s, 3)
	})
}

func TestBatchAllOrNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, d ds.Batching) {
		ctx := context.Background()
		s := Wrap(d)
		s.SetBudget(ds.NewKey("/b"), 50)

		b, err := s.Batch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		keys := []string{"/b/1", "/b/2", "/b/3", "/b/4"}
		var total int64
		for _, k := range keys {
			v := []byte("0123456789") // 4+10 = 14 bytes each, 56 in all
			total += cost(k, v)
			if err := b.Put(ctx, ds.NewKey(k), v); err != nil {
				t.Fatal(err)
			}
		}
		// Each write alone fits, but the batch as a whole does not.
		err = b.Commit(ctx)
		assertNoSpace(t, err)
		if !strings.Contains(err.Error(), "batch") {
			t.Errorf("message %q does not say it was a batch", err)
		}
		for _, k := range keys {
			assertHas(t, s, k, false)
			assertHas(t, d, k, false)
		}
		assertRemaining(t, s, "/b", 50)
		assertRefused(t, s, 1)

		// The refused batch keeps its writes: with more room, it commits
		// all of them, charged exactly.
		s.SetBudget(ds.NewKey("/b"), total)
		if err := b.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			assertHas(t, d, k, true)
		}
		assertRemaining(t, s, "/b", 0)

		// A committed batch is empty: committing it again spends nothing.
		if err := b.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		assertRemaining(t, s, "/b", 0)

		// Deletes in a batch are charged too, and refused all together.
		s.SetBudget(ds.NewKey("/b"), 7)
		b2, err := s.Batch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys[:2] {
			if err := b2.Delete(ctx, ds.NewKey(k)); err != nil {
				t.Fatal(err)
			}
		}
		assertNoSpace(t, b2.Commit(ctx)) // 8 bytes > 7
		assertHas(t, d, "/b/1", true)
		assertHas(t, d, "/b/2", true)
		assertRemaining(t, s, "/b", 7)
		s.SetBudget(ds.NewKey("/b"), 8)
		if err := b2.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		assertHas(t, d, "/b/1", false)
		assertHas(t, d, "/b/2", false)
		assertHas(t, d, "/b/3", true)
		assertRemaining(t, s, "/b", 0)

		// Writes of a batch apply in order: a put after a delete of the same key wins.
		s.SetBudget(ds.NewKey("/b"), -1)
		b3, _ := s.Batch(ctx)
		_ = b3.Delete(ctx, ds.NewKey("/b/9"))
		_ = b3.Put(ctx, ds.NewKey("/b/9"), []byte("v"))
		if err := b3.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		assertHas(t, d, "/b/9", true)
		assertRefused(t, s, 2)
	})
}

func TestTwoPrefixes(t *testing.T) {
	eachBackend(t, func(t *testing.T, d ds.Batching) {
		ctx := context.Background()
		s := Wrap(d)
		s.SetBudget(ds.NewKey("/ferry/crdt"), 20)
		s.SetBudget(ds.NewKey("/ferry/blocks"), 1000)

		mustPut(t, s, "/ferry/crdt/k", []byte("0123456")) // 13+7 = 20
		assertRemaining(t, s, "/ferry/crdt", 0)
		assertNoSpace(t, s.Put(ctx, ds.NewKey("/ferry/crdt/l"), nil))

		// The other prefix still has room.
		v := []byte("block")
		mustPut(t, s, "/ferry/blocks/x", v)
		assertRemaining(t, s, "/ferry/blocks", 1000-cost("/ferry/blocks/x", v))
		assertRemaining(t, s, "/ferry/crdt", 0)

		// A batch that touches the exhausted prefix is refused as a whole,
		// including its writes under the prefix with room.
		b, _ := s.Batch(ctx)
		_ = b.Put(ctx, ds.NewKey("/ferry/blocks/y"), v)
		_ = b.Put(ctx, ds.NewKey("/ferry/crdt/m"), v)
		assertNoSpace(t, b.Commit(ctx))
		assertHas(t, d, "/ferry/blocks/y", false)
		assertHas(t, d, "/ferry/crdt/m", false)
		assertRemaining(t, s, "/ferry/blocks", 1000-cost("/ferry/blocks/x", v))

		// A write must fit in every budget covering it: "/" covers all.
		s.SetBudget(ds.NewKey("/"), 30)
		assertNoSpace(t, s.Put(ctx, ds.NewKey("/ferry/blocks/z"), make([]byte, 31)))
		assertHas(t, d, "/ferry/blocks/z", false)
		assertRemaining(t, s, "/", 30)
		assertRemaining(t, s, "/ferry/blocks", 1000-cost("/ferry/blocks/x", v))
		mustPut(t, s, "/ferry/blocks/z", make([]byte, 10)) // 15+10 = 25: charged to both
		assertRemaining(t, s, "/", 5)
		assertRemaining(t, s, "/ferry/blocks", 1000-cost("/ferry/blocks/x", v)-25)
		assertNoSpace(t, s.Put(ctx, ds.NewKey("/elsewhere"), nil)) // 10 > 5
		assertRefused(t, s, 4)
	})
}

func TestFull(t *testing.T) {
	eachBackend(t, func(t *testing.T, d ds.Batching) {
		ctx := context.Background()
		s := Wrap(d)
		s.SetBudget(ds.NewKey("/"), 1000)
		mustPut(t, s, "/k", []byte("v"))
		spent := cost("/k", []byte("v"))

		s.SetFull(true)
		assertNoSpace(t, s.Put(ctx, ds.NewKey("/n"), []byte("v")))
		assertNoSpace(t, s.Delete(ctx, ds.NewKey("/k")))
		b, _ := s.Batch(ctx)
		_ = b.Put(ctx, ds.NewKey("/n"), []byte("v"))
		assertNoSpace(t, b.Commit(ctx))
		assertHas(t, d, "/n", false)
		assertHas(t, d, "/k", true)
		assertRemaining(t, s, "/", 1000-spent)
		assertRefused(t, s, 3)
		// Reads and Sync still work.
		if v, err := s.Get(ctx, ds.NewKey("/k")); err != nil || string(v) != "v" {
			t.Errorf("get while full = %q, %v", v, err)
		}
		if n, err := s.GetSize(ctx, ds.NewKey("/k")); err != nil || n != 1 {
			t.Errorf("getsize while full = %d, %v", n, err)
		}
		if err := s.Sync(ctx, ds.NewKey("/")); err != nil {
			t.Errorf("sync while full: %v", err)
		}

		s.SetFull(false)
		if err := b.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		mustPut(t, s, "/m", []byte("v"))
		if err := s.Delete(ctx, ds.NewKey("/k")); err != nil {
			t.Fatal(err)
		}
		assertHas(t, d, "/n", true)
		assertHas(t, d, "/m", true)
		assertHas(t, d, "/k", false)
		assertRemaining(t, s, "/", 1000-3*spent-int64(len("/k")))
		assertRefused(t, s, 3)
	})
}

func TestFullWhileExists(t *testing.T) {
	eachBackend(t, func(t *testing.T, d ds.Batching) {
		ctx := context.Background()
		s := Wrap(d)
		flag := filepath.Join(t.TempDir(), "disk-full")
		s.FullWhileExists(flag)

		mustPut(t, s, "/a", []byte("1")) // no file yet

		if err := os.WriteFile(flag, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		assertNoSpace(t, s.Put(ctx, ds.NewKey("/b"), []byte("2")))
		assertNoSpace(t, s.Delete(ctx, ds.NewKey("/a")))
		b, _ := s.Batch(ctx)
		_ = b.Put(ctx, ds.NewKey("/c"), []byte("3"))
		assertNoSpace(t, b.Commit(ctx))
		assertHas(t, d, "/a", true)
		assertHas(t, d, "/b", false)
		assertHas(t, d, "/c", false)
		assertRefused(t, s, 3)

		if err := os.Remove(flag); err != nil {
			t.Fatal(err)
		}
		mustPut(t, s, "/b", []byte("2"))
		if err := b.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		assertHas(t, d, "/c", true)

		// "" turns it off even while the file exists.
		if err := os.WriteFile(flag, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		assertNoSpace(t, s.Put(ctx, ds.NewKey("/d"), nil))
		s.FullWhileExists("")
		mustPut(t, s, "/d", nil)
		assertRefused(t, s, 4)
	})
}

func TestDeleteCharged(t *testing.T) {
	eachBackend(t, func(t *testing.T, d ds.Batching) {
		ctx := context.Background()
		s := Wrap(d)
		key := "/del/key"
		mustPut(t, s, key, []byte("value"))

		s.SetBudget(ds.NewKey("/del"), int64(len(key))-1)
		assertNoSpace(t, s.Delete(ctx, ds.NewKey(key)))
		assertHas(t, d, key, true)
		assertRemaining(t, s, "/del", int64(len(key))-1)
		assertRefused(t, s, 1)

		s.SetBudget(ds.NewKey("/del"), int64(len(key)))
		if err := s.Delete(ctx, ds.NewKey(key)); err != nil {
			t.Fatal(err)
		}
		assertHas(t, d, key, false)
		assertRemaining(t, s, "/del", 0)

		// Deleting a missing key writes a tombstone too: still charged.
		assertNoSpace(t, s.Delete(ctx, ds.NewKey("/del/missing")))
		assertRefused(t, s, 2)
	})
}

func TestConcurrentNeverOverspends(t *testing.T) {
	eachBackend(t, func(t *testing.T, d ds.Batching) {
		ctx := context.Background()
		s := Wrap(d)
		const budget = 2000
		s.SetBudget(ds.NewKey("/c"), budget)

		const workers, perWorker = 8, 40
		var wg sync.WaitGroup
		var mu sync.Mutex
		accepted, refused := 0, 0
		errs := make(chan error, workers*perWorker)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perWorker {
					value := make([]byte, 1+(w*7+i*13)%40)
					var err error
					if i%4 == 3 {
						// Every fourth write is a batch of two keys.
						b, berr := s.Batch(ctx)
						if berr != nil {
							errs <- berr
							return
						}
						_ = b.Put(ctx, ds.NewKey(fmt.Sprintf("/c/%d/%d/a", w, i)), value)
						_ = b.Put(ctx, ds.NewKey(fmt.Sprintf("/c/%d/%d/b", w, i)), value)
						err = b.Commit(ctx)
					} else {
						err = s.Put(ctx, ds.NewKey(fmt.Sprintf("/c/%d/%d", w, i)), value)
					}
					mu.Lock()
					switch {
					case err == nil:
						accepted++
					case errors.Is(err, ErrNoSpace):
						refused++
					default:
						errs <- err
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}

		if accepted+refused != workers*perWorker {
			t.Errorf("accepted %d + refused %d != %d writes", accepted, refused, workers*perWorker)
		}
		if refused == 0 {
			t.Fatal("no write was refused: the budget is too large for the test")
		}
		assertRefused(t, s, uint64(refused))

		bytes, _ := stored(t, d, "/c")
		if bytes > budget {
			t.Errorf("stored %d bytes under /c, budget was %d", bytes, budget)
		}
		// No overwrites or deletes: what is stored is exactly what was spent.
		left, _ := s.Remaining(ds.NewKey("/c"))
		if bytes != budget-left {
			t.Errorf("stored %d bytes, but %d were spent", bytes, budget-left)
		}
	})
}

func TestPassThrough(t *testing.T) {
	eachBackend(t, func(t *testing.T, d ds.Batching) {
		ctx := context.Background()
		s := Wrap(d)
		if s.Unwrap() != d {
			t.Error("Unwrap does not return the wrapped datastore")
		}
		mustPut(t, s, "/q/1", []byte("a"))
		mustPut(t, s, "/q/2", []byte("bb"))
		if _, n := stored(t, s, "/q"); n != 2 {
			t.Errorf("query through the store found %d entries, want 2", n)
		}
		if _, err := s.Get(ctx, ds.NewKey("/q/3")); !errors.Is(err, ds.ErrNotFound) {
			t.Errorf("get missing = %v, want ErrNotFound", err)
		}
		if err := s.Sync(ctx, ds.NewKey("/q")); err != nil {
			t.Error(err)
		}

		var p ds.Datastore = s
		if _, ok := p.(ds.PersistentDatastore); !ok {
			t.Fatal("Store is not a PersistentDatastore")
		}
		got, err := s.DiskUsage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ds.DiskUsage(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("DiskUsage = %d, wrapped datastore says %d", got, want)
		}
	})
}

func TestDiskUsageOfPlainDatastore(t *testing.T) {
	// MapDatastore is not a PersistentDatastore: DiskUsage reports 0.
	s := Wrap(ds.NewMapDatastore())
	if n, err := s.DiskUsage(context.Background()); n != 0 || err != nil {
		t.Errorf("DiskUsage = %d, %v; want 0, nil", n, err)
	}
}

func TestPrefixNormalized(t *testing.T) {
	s := Wrap(ds.NewMapDatastore())
	s.SetBudget(ds.Key{}, 3) // the zero key is the root
	if n, ok := s.Remaining(ds.NewKey("/")); !ok || n != 3 {
		t.Errorf("Remaining(/) = %d, %v; want 3, true", n, ok)
	}
}
