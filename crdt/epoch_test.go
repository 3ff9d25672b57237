package crdt

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	mh "github.com/multiformats/go-multihash"
)

func mustCid(t *testing.T, data string) cid.Cid {
	t.Helper()
	c, err := cid.V1Builder{Codec: cid.DagProtobuf, MhType: mh.SHA2_256}.Sum([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEpochTag(t *testing.T) {
	ep := Epoch{Number: 3, ID: "0123456789abcdef"}
	if got, err := ParseEpoch(ep.String()); err != nil || got != ep {
		t.Fatalf("parse %s: %v %v", ep, got, err)
	}
	for _, bad := range []string{"", "1", "1-xyz", "0-0123456789abcdef", "1-0123456789ABCDEF", "-1-0123456789abcdef"} {
		if _, err := ParseEpoch(bad); err == nil {
			t.Errorf("ParseEpoch(%q) accepted", bad)
		}
	}
	if !ep.After(Epoch{}) || (Epoch{}).After(ep) || !(Epoch{Number: 3, ID: "f123456789abcdef"}).After(ep) {
		t.Error("epoch order")
	}
	heads := []cid.Cid{mustCid(t, "a"), mustCid(t, "b")}
	for _, e := range []Epoch{{}, ep} {
		p, err := EncodeHeads(heads, e)
		if err != nil {
			t.Fatal(err)
		}
		got, gotEp, err := DecodeHeads(p)
		if err != nil || gotEp != e || !slices.Equal(got, heads) || HeadsEpoch(p) != e {
			t.Fatalf("round trip %s: %v %v %v", e, got, gotEp, err)
		}
	}
	// A repeated or malformed tag is refused.
	p, _ := EncodeHeads(heads, ep)
	if _, _, err := DecodeHeads(appendEpochTag(p, ep)); err == nil {
		t.Error("two epoch tags accepted")
	}
	if _, _, err := DecodeHeads(append(p[:len(p):len(p)], 0x7a, 0x01, 'x')); err == nil {
		t.Error("a bad epoch tag accepted")
	}
}

// TestCompactionCarriesOfflineEdits: the office compacts while a laptop is
// away; an online laptop moves to the new epoch at once; the away laptop
// comes back with edits and a delete made on the old epoch, moves too and
// carries them over; every node ends with the same state, the old epoch's
// keys gone and recent history kept.
func TestCompactionCarriesOfflineEdits(t *testing.T) {
	ctx := context.Background()
	n := newTestNet(t, 3)
	a, b, c := n.replicas[0], n.replicas[1], n.replicas[2]
	for i := range 5 {
		id := fmt.Sprintf("c%d", i)
		mustPut(t, a, "contacts", id, map[string]any{"last_name": "L" + id, "phone": "p0"})
	}
	n.waitConverged(10 * time.Second)
	for i := range 5 {
		id := fmt.Sprintf("c%d", i)
		for v := 1; v <= 4; v++ {
			mustPut(t, b, "contacts", id, map[string]any{"phone": fmt.Sprintf("p%d", v)})
		}
	}
	n.waitConverged(10 * time.Second)
	n.setOnline(2, false)
	mustPut(t, c, "contacts", "c1", map[string]any{"phone": "from-c"})
	if _, err := c.Delete(ctx, "contacts", "c2"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, c, "contacts", "c9", map[string]any{"last_name": "New"})

	rep, err := a.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Epoch.Number != 1 || rep.Seeded == 0 || rep.DroppedKeys == 0 {
		t.Fatalf("compaction report %+v", rep)
	}
	waitFor(t, 10*time.Second, "B to move to the new epoch", func() bool { return b.Epoch() == rep.Epoch })
	mustPut(t, a, "contacts", "c3", map[string]any{"phone": "after"})
	n.setOnline(2, true)
	n.waitConverged(20 * time.Second)
	for _, r := range n.all() {
		if r.Epoch() != rep.Epoch {
			t.Fatalf("replica %s in epoch %s", r.writer, r.Epoch())
		}
		if v := mustGet(t, r, "contacts", "c1").Values()["phone"]; v != "from-c" {
			t.Errorf("replica %s: c1 phone %v", r.writer, v)
		}
		if _, err := r.Get(ctx, "contacts", "c2"); !errors.Is(err, ErrNotFound) {
			t.Errorf("replica %s: c2 not deleted: %v", r.writer, err)
		}
		if v := mustGet(t, r, "contacts", "c3").Values()["phone"]; v != "after" {
			t.Errorf("replica %s: c3 phone %v", r.writer, v)
		}
		mustGet(t, r, "contacts", "c9")
		// The old epoch's keys are gone.
		res, err := r.base.Query(ctx, query.Query{Prefix: "/ferry/crdt/", KeysOnly: true, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		left, _ := res.Rest()
		if len(left) > 0 {
			t.Errorf("replica %s still holds old-epoch key %s", r.writer, left[0].Key)
		}
	}
	// History before the compaction is kept (values, marked compacted).
	h, err := a.History(ctx, "contacts", "c4", "phone")
	if err != nil {
		t.Fatal(err)
	}
	var all, compacted []any
	for _, e := range h {
		all = append(all, e.Value)
		if e.Compacted {
			compacted = append(compacted, e.Value)
		}
	}
	// p0 is in the record's first write, still shown for last_name: it
	// stays in the epoch; p1-p3 were in writes the compaction dropped.
	if fmt.Sprint(all) != "[p0 p1 p2 p3 p4]" || fmt.Sprint(compacted) != "[p1 p2 p3]" {
		t.Errorf("history of c4.phone: %v, compacted %v", all, compacted)
	}
}

// TestCompactionKilledHalfWay: a compaction cut short before its switch
// leaves the old epoch current and usable, and its partial namespace is
// cleared at the next start.
func TestCompactionKilledHalfWay(t *testing.T) {
	ctx := context.Background()
	n := newTestNet(t, 1)
	a := n.replicas[0]
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Smith"})
	// A build that never switched: its marker and some of its keys.
	ep := Epoch{Number: 1, ID: "00000000000000aa"}
	if err := a.markBuilding(ctx, ep); err != nil {
		t.Fatal(err)
	}
	side, _, err := a.openSide(ctx, ep, false)
	if err != nil {
		t.Fatal(err)
	}
	mustPutStore(t, side, ctx)
	if err := side.Close(); err != nil {
		t.Fatal(err)
	}
	dir := a.dir
	a.stop()
	a = n.start(0, dir)
	if a.Epoch() != (Epoch{}) {
		t.Fatalf("epoch %s after a cut-short build", a.Epoch())
	}
	if v := mustGet(t, a, "contacts", "c1").Values()["last_name"]; v != "Smith" {
		t.Fatalf("c1 %v", v)
	}
	res, err := a.base.Query(ctx, query.Query{Prefix: ep.namespace(a.opts.Namespace).String() + "/", KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := res.Rest(); len(left) > 0 {
		t.Errorf("%d keys of the cut-short build left", len(left))
	}
	// And it still compacts.
	if _, err := a.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if v := mustGet(t, a, "contacts", "c1").Values()["last_name"]; v != "Smith" {
		t.Fatalf("c1 after compaction: %v", v)
	}
}

func mustPutStore(t *testing.T, s *Store, ctx context.Context) {
	t.Helper()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	id := OpID{Time: s.clock.Now(), Writer: s.opts.Writer}
	if err := s.putWrite(ctx, "contacts", "x", &write{ID: id, Ops: []Op{{ID: id, Field: "last_name", Value: "X"}}}); err != nil {
		t.Fatal(err)
	}
}

// TestCompactionProperty: the same random schedule of edits, deletes,
// conflicts, resolutions, partitions and skewed clocks, run without and
// with compactions at random points (by any replica: a second office
// compacting, two compactions while a replica is away), ends in the same
// visible values, conflicts and open flags on every replica.
func TestCompactionProperty(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 3
	} else if raceEnabled {
		seeds = 5
	}
	var carried int64
	defer func() {
		t.Logf("%d schedules, %d writes and facts carried by replicas that were away", seeds, carried)
		if carried == 0 && !t.Failed() {
			t.Error("no schedule had a replica carry anything over: the property was not exercised")
		}
	}()
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprintf("seed=%d", seed+1), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed+1, 99))
			steps := 36
			at := map[int]int{} // step -> replica that compacts
			for range 1 + rng.IntN(2) {
				at[1+rng.IntN(steps-2)] = rng.IntN(3)
			}
			want, _ := runCompactionSchedule(t, seed+1, steps, nil)
			got, c := runCompactionSchedule(t, seed+1, steps, at)
			carried += c
			t.Logf("compactions at %v; final state: %s", at, got)
			if got != want {
				t.Errorf("with compactions at %v:\n got  %s\n want %s", at, got, want)
			}
		})
	}
}

// runCompactionSchedule runs a deterministic schedule: after every step
// the online replicas converge, so what each write saw does not depend on
// timing. It returns replica A's final state, without op ids (those of
// the carrying writes differ).
func runCompactionSchedule(t *testing.T, seed uint64, steps int, compactAt map[int]int) (string, int64) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 7))
	n := newTestNetWithSchema(t, 3, policySchema(PolicyNewest, PolicyManual))
	ids := []string{"c1", "c2", "c3"}
	for _, id := range ids {
		mustPut(t, n.replicas[0], "contacts", id, map[string]any{"last_name": "L0", "first_name": "F0", "phone": "P0"})
	}
	n.waitConverged(10 * time.Second)
	now := epoch
	online := []bool{true, true, true}
	for step := 0; step < steps; step++ {
		now = now.Add(time.Duration(1000+rng.IntN(2000)) * time.Millisecond)
		if who, ok := compactAt[step]; ok {
			r := n.replicas[who]
			r.clock.Set(now)
			waitFor(t, 10*time.Second, "a compaction", func() bool {
				rep, err := r.Compact(ctx)
				if err == nil {
					t.Logf("step %d: %s compacted into %s (seeded %d, carried %d)", step, r.writer, rep.Epoch, rep.Seeded, rep.Carried)
				}
				if err != nil && !errors.Is(err, ErrBusy) {
					t.Fatalf("compact on %s: %v", r.writer, err)
				}
				return err == nil
			})
		}
		i := rng.IntN(3)
		r := n.replicas[i]
		r.clock.Set(now.Add(time.Duration(rng.IntN(800)-400) * time.Millisecond))
		id := ids[rng.IntN(len(ids))]
		switch k := rng.IntN(10); {
		case k < 2: // partition
			if online[i] && !slices.Contains(append(slices.Clone(online[:i]), online[i+1:]...), true) {
				break // someone stays online
			}
			online[i] = !online[i]
			n.setOnline(i, online[i])
		case k < 3: // delete
			_, err := r.Delete(ctx, "contacts", id)
			if err != nil && !errors.Is(err, ErrNotFound) {
				t.Fatal(err)
			}
		case k < 4: // resolve what is open
			rec, err := r.Get(ctx, "contacts", id)
			if err != nil {
				break
			}
			for _, c := range ConflictsOf(rec) {
				if c.Open && c.Field != RecordField {
					if _, err := r.Resolve(ctx, "contacts", id, c.Field, Resolution{Value: fmt.Sprintf("r%d", step)}); err != nil {
						t.Fatal(err)
					}
				} else if c.Open {
					if _, err := r.Resolve(ctx, "contacts", id, c.Field, Resolution{Pick: 1 + rng.IntN(len(c.Candidates))}); err != nil {
						t.Fatal(err)
					}
				}
			}
		default: // edit some fields (recreating a deleted record)
			fields := map[string]any{"last_name": fmt.Sprintf("l%d", step)}
			for _, f := range []string{"first_name", "phone"} {
				if rng.IntN(2) == 0 {
					fields[f] = fmt.Sprintf("%s%d", f[:1], step)
				}
			}
			if rng.IntN(3) > 0 {
				delete(fields, "last_name")
			}
			if _, err := r.Put(ctx, "contacts", id, fields); err != nil && !strings.Contains(err.Error(), "is required") {
				t.Fatal(err)
			}
		}
		n.waitConverged(20 * time.Second)
	}
	for i := range online {
		if !online[i] {
			n.setOnline(i, true)
		}
	}
	n.waitConverged(30 * time.Second)
	views := map[string]bool{}
	for _, r := range n.all() {
		views[valuesView(t, r)] = true
	}
	if len(views) != 1 {
		t.Fatalf("replicas differ: %v", views)
	}
	return valuesView(t, n.replicas[0]), n.carried.Load()
}

// valuesView renders what the contacts show, values and flags only.
func valuesView(t *testing.T, r *replica) string {
	t.Helper()
	var out []string
	err := r.listFolded(context.Background(), "contacts", func(rec *Record, exists bool) error {
		s := rec.ID + ":"
		if !exists {
			s += "(deleted)"
		}
		names := make([]string, 0, len(rec.Fields))
		for n := range rec.Fields {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			f := rec.Fields[name]
			var cands []string
			for _, c := range f.Candidates {
				cands = append(cands, fmt.Sprint(c.Value))
			}
			sort.Strings(cands)
			s += fmt.Sprintf(" %s=%v%v", name, f.Value, cands)
			if f.Open {
				s += "(open)"
			}
		}
		if c := rec.Conflict; c != nil {
			s += fmt.Sprintf(" record[deleted=%t open=%t dels=%d edits=%d]", c.Deleted, c.Open, len(c.Deletes), len(c.Edits))
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, "; ")
}

// TestEpochsWithTrust: in a signed network only an office compacts; two
// offices compacting the same epoch apart make two epochs, and every node
// ends in the later one; a laptop away across both compactions carries
// its edits over; an op that did not count (signed by a non-member)
// still does not count; a manifest that is not an office's is refused.
func TestEpochsWithTrust(t *testing.T) {
	ctx := context.Background()
	n := newTrustNet(t, 3, "X")
	a, b, c := n.replicas[0], n.replicas[1], n.replicas[2]
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Smith", "phone": "1"})
	n.waitConverged(10 * time.Second)
	rawWrite(t, b, "contacts", "c1", "first_name", "Mallory", "X", n.keys["X"])
	n.waitConverged(10 * time.Second)
	if _, err := b.Compact(ctx); !errors.Is(err, ErrForbidden) {
		t.Fatalf("a laptop compacted: %v", err)
	}
	if err := a.AddMember(ctx, b.writer, "office 2", RoleOffice); err != nil {
		t.Fatal(err)
	}
	n.waitConverged(10 * time.Second)

	n.setOnline(2, false) // C away across both compactions
	mustPut(t, c, "contacts", "c1", map[string]any{"phone": "from-c"})
	mustPut(t, c, "contacts", "c2", map[string]any{"last_name": "Jones"})
	n.setOnline(1, false) // A and B apart: each compacts epoch 0
	repA, err := a.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, b, "contacts", "c1", map[string]any{"first_name": "John"})
	repB, err := b.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if repA.Epoch.Number != 1 || repB.Epoch.Number != 1 || repA.Epoch == repB.Epoch {
		t.Fatalf("epochs %s and %s", repA.Epoch, repB.Epoch)
	}
	later := repA.Epoch
	if repB.Epoch.After(later) {
		later = repB.Epoch
	}
	n.setOnline(1, true)
	waitFor(t, 10*time.Second, "A and B in the later epoch", func() bool { return a.Epoch() == later && b.Epoch() == later })
	n.waitConverged(10 * time.Second)
	// A second compaction, C still away.
	rep2, err := a.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n.setOnline(2, true)
	n.waitConverged(20 * time.Second)
	for _, r := range n.all() {
		if r.Epoch() != rep2.Epoch {
			t.Fatalf("replica %s in epoch %s, want %s", r.writer, r.Epoch(), rep2.Epoch)
		}
		rec := mustGet(t, r, "contacts", "c1")
		if v := rec.Values(); v["phone"] != "from-c" || v["first_name"] != "John" {
			t.Errorf("replica %s: c1 %v", r.writer, v)
		}
		mustGet(t, r, "contacts", "c2")
		ign, err := r.Ignored(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ign) != 1 || ign[0].Op.Writer != "X" {
			t.Errorf("replica %s: ignored ops %v", r.writer, ign)
		}
		// Every manifest, the sibling epoch's too (carried over by B).
		eps, err := r.Epochs(ctx)
		if err != nil || len(eps) != 3 || eps[2].Epoch != rep2.Epoch {
			t.Errorf("replica %s: epochs %v %v", r.writer, eps, err)
		}
	}
	// A manifest written by a laptop does not make an epoch.
	side, _, err := c.openSide(ctx, Epoch{Number: 9, ID: "0000000000000009"}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer side.Close()
	info := &EpochInfo{Number: 9, Prev: rep2.Epoch.String(), By: c.writer, At: epoch, Cut: map[string]string{}}
	if err := sealEpochInfo(info); err != nil {
		t.Fatal(err)
	}
	if err := side.writeManifest(ctx, info); err != nil {
		t.Fatal(err)
	}
	if _, err := side.readManifest(ctx, info.Epoch); !errors.Is(err, ErrBadEpoch) {
		t.Errorf("a laptop's manifest: %v", err)
	}
}

// TestCompactionKeepsImportBatches: the writes of one import share one
// signature over the whole batch. Seeded into a new epoch, or carried over
// by a laptop that imported while away, they still verify on every node,
// and the batch's superseded writes stay hidden.
func TestCompactionKeepsImportBatches(t *testing.T) {
	ctx := context.Background()
	n := newTrustNet(t, 3)
	a, b, c := n.replicas[0], n.replicas[1], n.replicas[2]
	imp := func(r *replica, prefix string, count int) {
		var recs []ImportRecord
		for i := range count {
			recs = append(recs, ImportRecord{Line: i + 1, ID: fmt.Sprintf("%s%d", prefix, i), Fields: map[string]any{"last_name": fmt.Sprintf("L%d", i), "phone": "0"}})
		}
		if _, err := r.Import(ctx, "contacts", recs, nil); err != nil {
			t.Fatal(err)
		}
	}
	imp(a, "o", 5)
	n.waitConverged(10 * time.Second)
	mustPut(t, a, "contacts", "o2", map[string]any{"last_name": "Changed", "phone": "1"}) // retires o2's imported write
	mustPut(t, a, "contacts", "o3", map[string]any{"phone": "3"})                         // o3's stays, partly superseded
	n.waitConverged(10 * time.Second)
	n.setOnline(2, false)
	imp(c, "l", 4) // imported while away: carried over whole
	mustPut(t, c, "contacts", "l1", map[string]any{"last_name": "Gone", "phone": "9"})
	rep, err := a.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "B to move", func() bool { return b.Epoch() == rep.Epoch })
	n.setOnline(2, true)
	n.waitConverged(20 * time.Second)
	for _, r := range n.all() {
		if ig, err := r.Ignored(ctx); err != nil || len(ig) > 0 {
			t.Errorf("replica %s ignores %v (%v)", r.writer, ig, err)
		}
		want := map[string]string{"o0": "L0/0", "o1": "L1/0", "o2": "Changed/1", "o3": "L3/3", "o4": "L4/0",
			"l0": "L0/0", "l1": "Gone/9", "l2": "L2/0", "l3": "L3/0"}
		for id, w := range want {
			rec, err := r.Get(ctx, "contacts", id)
			if err != nil {
				t.Errorf("replica %s: %s: %v", r.writer, id, err)
				continue
			}
			v := rec.Values()
			if got := fmt.Sprintf("%v/%v", v["last_name"], v["phone"]); got != w || rec.Conflicted() {
				t.Errorf("replica %s: %s = %s (conflicted %v), want %s", r.writer, id, got, rec.Conflicted(), w)
			}
		}
	}
}

// TestCompactionKeepsWhatAForgeryHid: a value shown only because the write
// that tombstoned it does not count (a non-member's) is seeded too.
func TestCompactionKeepsWhatAForgeryHid(t *testing.T) {
	ctx := context.Background()
	n := newTrustNet(t, 2, "X")
	a, b := n.replicas[0], n.replicas[1]
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Smith"})
	mustPut(t, a, "contacts", "c1", map[string]any{"phone": "1"})
	n.waitConverged(10 * time.Second)
	rawWrite(t, b, "contacts", "c1", "phone", "forged", "X", n.keys["X"])
	n.waitConverged(10 * time.Second)
	rep, err := a.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "B to move", func() bool { return b.Epoch() == rep.Epoch })
	n.waitConverged(10 * time.Second)
	for _, r := range n.all() {
		if v := mustGet(t, r, "contacts", "c1").Values(); v["phone"] != "1" || v["last_name"] != "Smith" {
			t.Errorf("replica %s: c1 %v", r.writer, v)
		}
		if ig, err := r.Ignored(ctx); err != nil || len(ig) != 1 || ig[0].Op.Writer != "X" {
			t.Errorf("replica %s: ignored %v %v", r.writer, ig, err)
		}
	}
}

// After a compaction the unique index, the schema and the digest are the
// new epoch's: a taken value is still refused, and the digest is equal on
// both sides.
func TestCompactionKeepsDerivedState(t *testing.T) {
	ctx := context.Background()
	n := newTestNet(t, 2)
	a, b := n.replicas[0], n.replicas[1]
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "A", "email": "a@x"})
	mustPut(t, a, "contacts", "c1", map[string]any{"phone": "1"})
	n.waitConverged(10 * time.Second)
	before, err := a.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := a.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "B to move", func() bool { return b.Epoch() == rep.Epoch })
	for _, r := range n.all() {
		if _, err := r.Put(ctx, "contacts", "c2", map[string]any{"last_name": "B", "email": "a@x"}); err == nil {
			t.Errorf("replica %s: a taken email was accepted after the compaction", r.writer)
		}
		if _, err := r.Collection(ctx, "contacts"); err != nil {
			t.Errorf("replica %s: schema: %v", r.writer, err)
		}
		waitFor(t, 10*time.Second, "the digest of the new epoch", func() bool {
			d, err := r.Digest(ctx)
			return err == nil && d == before
		})
	}
}

func TestArchiveEncoding(t *testing.T) {
	in := []archived{
		{Field: "phone", Op: OpID{Time: 7, Writer: "12D3KooWA"}, Value: "+41 1"},
		{Field: "amount", Op: OpID{Time: 6, Writer: "12D3KooWB"}, Value: 2.5},
		{Field: "active", Op: OpID{Time: 5, Writer: "12D3KooWA"}, Value: true},
		{Field: "phone", Op: OpID{Time: 4, Writer: "12D3KooWB"}, Value: nil},
	}
	b, err := encodeArchive(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeArchive(b)
	if err != nil || fmt.Sprint(out) != fmt.Sprint(in) {
		t.Fatalf("round trip: %v %v", out, err)
	}
	for _, bad := range [][]byte{nil, {2}, {archiveFormat, 0xff}, append([]byte{archiveFormat}, 0x82, 0x80, 0x81, 0x84, 0x61, 'f', 0x01, 0x05, 0x01)} {
		if _, err := decodeArchive(bad); err == nil {
			t.Errorf("decodeArchive(%x) accepted", bad)
		}
	}
}

// TestVouchedByALaptopDoesNotCount: only an office vouches for a write
// seeded apart from its import batch. A laptop that re-signs an office's
// imported write with another value, as if vouching, gets an ignored op.
func TestVouchedByALaptopDoesNotCount(t *testing.T) {
	ctx := context.Background()
	n := newTrustNet(t, 2)
	a, b := n.replicas[0], n.replicas[1]
	if _, err := a.Import(ctx, "contacts", []ImportRecord{
		{Line: 1, ID: "c1", Fields: map[string]any{"last_name": "Smith"}},
		{Line: 2, ID: "c2", Fields: map[string]any{"last_name": "Jones"}},
	}, nil); err != nil {
		t.Fatal(err)
	}
	n.waitConverged(10 * time.Second)
	// B forges: A's write of c1, last_name changed, vouched by B.
	eid, _ := EscapeID("c1")
	var key string
	var w *write
	if err := b.scan(ctx, recordPrefix("contacts", eid).String()+"/", func(kp keyParts, got *write) error {
		key, w = writeKey("contacts", eid, kp.Op).String(), got
		return nil
	}); err != nil || w == nil || !w.Batch {
		t.Fatalf("c1's imported write: %+v %v", w, err)
	}
	forged := &write{ID: w.ID, Ops: []Op{{ID: w.ID, Field: "last_name", Value: "Forged"}}}
	unsigned, err := encodeWrite(forged)
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := parseOpKey(key)
	fw, err := decodeWrite(kp, unsigned)
	if err != nil {
		t.Fatal(err)
	}
	fw.Batch = true
	value, err := b.vouch(key, fw)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeWrite(kp, value); err != nil || got.Voucher != b.writer {
		t.Fatalf("vouched form: %+v %v", got, err)
	}
	pd, err := b.eng().Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := pd.Put(ctx, ds.RawKey(key), value); err != nil {
		t.Fatal(err)
	}
	if err := pd.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	n.waitConverged(10 * time.Second)
	for _, r := range n.all() {
		if v := mustGet(t, r, "contacts", "c1").Values()["last_name"]; v != "Smith" {
			t.Errorf("replica %s: c1 last_name %v", r.writer, v)
		}
	}
}

// TestDeadWriteStaysDeadAcrossTwoCompactions: C writes a value and goes
// away; B supersedes it twice (the first write retires C's, the second
// retires the first and, C's write being retired already, does not name
// it); the office compacts twice. The second cut must still cover C's
// write, known to the office though no seed shows it: C, back, does not
// carry it over.
func TestDeadWriteStaysDeadAcrossTwoCompactions(t *testing.T) {
	ctx := context.Background()
	n := newTestNet(t, 3)
	a, b, c := n.replicas[0], n.replicas[1], n.replicas[2]
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Smith"})
	n.waitConverged(10 * time.Second)
	mustPut(t, c, "contacts", "c1", map[string]any{"phone": "from-c"})
	n.waitConverged(10 * time.Second)
	n.setOnline(2, false)
	mustPut(t, b, "contacts", "c1", map[string]any{"phone": "b1"})
	mustPut(t, b, "contacts", "c1", map[string]any{"phone": "b2"})
	n.waitConverged(10 * time.Second)
	for range 2 {
		if _, err := a.Compact(ctx); err != nil {
			t.Fatal(err)
		}
		n.waitConverged(10 * time.Second)
	}
	n.setOnline(2, true)
	n.waitConverged(20 * time.Second)
	for _, r := range n.all() {
		rec := mustGet(t, r, "contacts", "c1")
		if v := rec.Values()["phone"]; v != "b2" || rec.Conflicted() {
			t.Errorf("replica %s: phone %v (conflicted %v)", r.writer, v, rec.Conflicted())
		}
	}
}

// TestAdoptionGivesWayToALaterEpoch: a node moving to an epoch whose blocks
// nobody serves any more (its peers moved on and dropped them) moves to the
// later epoch it hears of instead of waiting for the adoption's timeout.
func TestAdoptionGivesWayToALaterEpoch(t *testing.T) {
	ctx := context.Background()
	n := newTestNet(t, 2)
	a, b := n.replicas[0], n.replicas[1]
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Smith"})
	n.waitConverged(10 * time.Second)
	n.setOnline(1, false)
	mustPut(t, b, "contacts", "c2", map[string]any{"last_name": "Away"})
	// An epoch whose head is nowhere: its adoption cannot finish.
	gone := Epoch{Number: 1, ID: "00000000000000aa"}
	b.OfferEpoch(gone, []cid.Cid{mustCid(t, "a block nobody holds")})
	waitFor(t, 5*time.Second, "B to start moving to the unreachable epoch", func() bool { return b.EpochStatus().Adopting })
	for range 2 {
		if _, err := a.Compact(ctx); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	n.setOnline(1, true)
	// A's heads reach B when A writes (or rebroadcasts).
	mustPut(t, a, "contacts", "c3", map[string]any{"last_name": "After"})
	waitFor(t, 30*time.Second, "B to move to A's epoch", func() bool { return b.Epoch() == a.Epoch() })
	t.Logf("B moved to %s %s after coming back", b.Epoch(), time.Since(start).Round(time.Millisecond))
	n.waitConverged(20 * time.Second)
	mustGet(t, a, "contacts", "c2")
	if st := b.EpochStatus(); st.LastError != "" {
		t.Errorf("B's epoch state: last error %q", st.LastError)
	}
}

// TestDigestLeavesOutEpochManifests: the digest's build leaves epoch
// manifests out, and so must its updates: a manifest merged again after
// a build (carried over by a replica that was away) was once counted, and
// two replicas with the same heads had different digests (chaos seed 0x1,
// "same heads everywhere but different digests").
func TestDigestLeavesOutEpochManifests(t *testing.T) {
	ctx := context.Background()
	n := newTestNet(t, 2)
	a, b := n.replicas[0], n.replicas[1]
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "One"})
	n.waitConverged(10 * time.Second)
	rep, err := a.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n.waitConverged(20 * time.Second)
	if b.Epoch() != rep.Epoch {
		t.Fatalf("B in epoch %s, want %s", b.Epoch(), rep.Epoch)
	}
	built, err := b.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The manifest merged again, as a carry puts it.
	b.digest.markDirty(EpochsCollection, rep.Epoch.String())
	again, err := b.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again != built {
		t.Errorf("digest changed by a manifest merged again: %s, built %s", again, built)
	}
	if da, err := a.Digest(ctx); err != nil || da != again {
		t.Errorf("digests differ with the same records: office %s (%v), B %s", da, err, again)
	}
}

// TestCompactionGivesUpOnAMergeCutShort: go-ds-crdt stopped for the switch
// in the middle of a merge (it marks the store dirty). The blocks of that
// merge may hang below no head yet, out of the switch's scan of the DAG,
// and nothing would carry their writes: the compaction gives up (ErrBusy),
// the epoch stays, and once repaired a compaction goes through.
func TestCompactionGivesUpOnAMergeCutShort(t *testing.T) {
	ctx := context.Background()
	n := newTestNet(t, 1)
	a := n.replicas[0]
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "One"})
	before := a.Epoch()
	testAfterStop = func(s *Store) { // as go-ds-crdt's Close does
		if err := s.base.Put(ctx, s.layout().dirty(), nil); err != nil {
			t.Error(err)
		}
	}
	_, err := a.Compact(ctx)
	testAfterStop = nil
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("compaction after a merge cut short: %v, want ErrBusy", err)
	}
	if a.Epoch() != before {
		t.Fatalf("epoch %s, want %s kept", a.Epoch(), before)
	}
	// Dirty, the store is repaired (go-ds-crdt's own repair may already
	// have run when it reopened).
	if err := a.Repair(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := a.Compact(ctx)
	if err != nil {
		t.Fatalf("compaction once repaired: %v", err)
	}
	if a.Epoch() != rep.Epoch {
		t.Errorf("epoch %s, want %s", a.Epoch(), rep.Epoch)
	}
	if v := mustGet(t, a, "contacts", "c1").Values()["last_name"]; v != "One" {
		t.Errorf("c1 last_name %v after the compaction", v)
	}
}
