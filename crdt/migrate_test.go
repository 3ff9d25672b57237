package crdt

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockservice"
	blockstore "github.com/ipfs/boxo/blockstore"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	badger "github.com/ipfs/go-ds-badger"

	"github.com/ferry-crm/ferry/internal/diskfault"
)

// The fixture in testdata/format1 was made by the release before this one
// (store format 1, commit 0360227): replica A of a three-replica signed
// network after partial edits, an edit chain, a field conflict, a delete
// concurrent with an edit, a deleted record, a resolution, and two writes
// the trust model ignores (a non-member's, a laptop's in an office-only
// collection). expected.txt is what that release showed (describeStore);
// store.jsonl.gz holds A's datastore, blocks.jsonl.gz the blocks.

// loadFixture fills d with a fixture dump.
func loadFixture(t *testing.T, path string, d ds.Batching) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 4<<20)
	n := 0
	for sc.Scan() {
		var kv struct {
			K string `json:"k"`
			V []byte `json:"v"`
		}
		if err := json.Unmarshal(sc.Bytes(), &kv); err != nil {
			t.Fatal(err)
		}
		if err := d.Put(ctx, ds.RawKey(kv.K), kv.V); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// migratedNet opens the fixture's replica A with this release.
func migratedNet(t *testing.T) (*testNet, string, int) {
	t.Helper()
	keys := testKeys(3)
	for w, seed := range newTrustNetKeys("X") {
		keys[w] = ed25519.NewKeyFromSeed(seed)
	}
	blocks := diskfault.Wrap(dssync.MutexWrap(ds.NewMapDatastore()))
	nblocks := loadFixture(t, "testdata/format1/blocks.jsonl.gz", blocks)
	bstore := blockstore.NewBlockstore(blocks)
	tn := &testNet{t: t, keys: keys, dag: merkledag.NewDAGService(blockservice.New(bstore, offline.Exchange(bstore))),
		blockFault: blocks, fault: map[int]*diskfault.Store{}, replicas: make([]*replica, 2)}
	dir := t.TempDir()
	opts := badger.DefaultOptions
	opts.GcInterval = 0
	base, err := badger.NewDatastore(dir, &opts)
	if err != nil {
		t.Fatal(err)
	}
	loadFixture(t, "testdata/format1/store.jsonl.gz", base)
	if err := base.Close(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tn.closeAll)
	return tn, dir, nblocks
}

// newTrustNetKeys is the extra keys newTrustNet makes.
func newTrustNetKeys(extra ...string) map[string][]byte {
	out := map[string][]byte{}
	for i, w := range extra {
		seed := make([]byte, 32)
		seed[0], seed[1] = 0xee, byte(i)
		out[w] = seed
	}
	return out
}

// fromMigration tells the supersede ops the migration wrote (on KeepField,
// by the migrating replica: the fixture has no op on KeepField).
func fromMigration(e HistoryEntry) bool { return e.Field == KeepField && e.Local }

func TestMigrateFormat1Store(t *testing.T) {
	want, err := os.ReadFile("testdata/format1/expected.txt")
	if err != nil {
		t.Fatal(err)
	}
	tn, dir, nblocks := migratedNet(t)
	a := tn.start(0, dir)
	ctx := context.Background()
	rep := a.Migration()
	if rep == nil || rep.Writes == 0 || rep.Hidden == 0 || rep.Carried == 0 || rep.OldBlocks == 0 || rep.Unreadable != 0 {
		t.Fatalf("migration report %+v", rep)
	}
	if got := describeStore(t, a, fromMigration); got != string(want) {
		t.Errorf("after migration the store shows:\n%s\nthe release before showed:\n%s", got, want)
	}
	if got := countKeys(t, tn.blockFault, ""); got >= nblocks {
		t.Errorf("%d blocks before, %d after: the old blocks stayed", nblocks, got)
	}
	if n := countKeys(t, a.base, migrateRoot); n != 0 {
		t.Errorf("%d collected entries left", n)
	}
	rpt, err := a.Check(ctx, CheckOptions{})
	if err != nil || !rpt.OK {
		t.Fatalf("check after migration: %+v %v", rpt, err)
	}
	// Restart: nothing to migrate, the same state.
	a.stop()
	a = tn.start(0, dir)
	if a.Migration() != nil {
		t.Errorf("a second open migrated again: %+v", a.Migration())
	}
	if got := describeStore(t, a, fromMigration); got != string(want) {
		t.Errorf("after a restart the store shows:\n%s", got)
	}
	// A new replica of this release syncs from the migrated one and shows
	// the same records, conflicts and ignored writes.
	b := tn.start(1, t.TempDir())
	if err := b.SetNodeInfo(ctx, "B", RoleLaptop); err != nil {
		t.Fatal(err)
	}
	mustPut(t, a, "contacts", "c5", map[string]any{"last_name": "After"})
	tn.waitConverged(10 * time.Second)
	section := func(s string) string {
		s = strings.Split(s, "== history")[0]
		return strings.Replace(s, "c4: amount=2 last_name=Four]", "c4: amount=2 last_name=Four c5: last_name=After]", 1)
	}
	if got, w := section(describeStore(t, b, nil)), section(string(want)); got != w {
		t.Errorf("a replica synced from the migrated one shows:\n%s\nwant:\n%s", got, w)
	}
}

// TestMigrationResumesAfterCollect: killed after the collect phase (the old
// namespace may be half cleared), the next open replays from what was
// collected.
func TestMigrationResumesAfterCollect(t *testing.T) {
	want, err := os.ReadFile("testdata/format1/expected.txt")
	if err != nil {
		t.Fatal(err)
	}
	tn, dir, _ := migratedNet(t)
	// Run the collect phase alone, as a process killed right after it.
	opts := badger.DefaultOptions
	opts.GcInterval = 0
	base, err := badger.NewDatastore(dir, &opts)
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.Writer = "A"
	o.Trust = tn.trustFor("A")
	s := &Store{opts: o, log: o.Logger, base: base, dag: tn.dag}
	rep := &MigrationReport{}
	ctx := context.Background()
	if err := s.collectLegacy(ctx, rep); err != nil {
		t.Fatal(err)
	}
	if err := s.setFormat(ctx, formatCollected); err != nil {
		t.Fatal(err)
	}
	if err := base.Close(); err != nil {
		t.Fatal(err)
	}
	a := tn.start(0, dir)
	if a.Migration() == nil || a.Migration().Writes != 0 {
		t.Fatalf("resumed migration: %+v", a.Migration())
	}
	if got := describeStore(t, a, fromMigration); got != string(want) {
		t.Errorf("after a resumed migration the store shows:\n%s\nwant:\n%s", got, want)
	}
}

func countKeys(t *testing.T, d ds.Read, prefix string) int {
	t.Helper()
	res, err := d.Query(context.Background(), query.Query{Prefix: prefix, KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	n := 0
	for r := range res.Next() {
		if r.Error != nil {
			t.Fatal(r.Error)
		}
		n++
	}
	return n
}
