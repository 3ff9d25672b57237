package crdt

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPartlySupersededProperty: writes of random subsets of a record's
// fields on replicas that go offline and come back, delivered in random
// order. A write is one element however many fields it has, so most
// elements end up partly superseded. Once every replica has everything,
// each field must show exactly the ops no write superseded: an op a writer
// saw and replaced never comes back, whatever became of the write that
// replaced it, and an op nobody saw stays a candidate.
func TestPartlySupersededProperty(t *testing.T) {
	seeds := 8
	if testing.Short() {
		seeds = 2
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprintf("seed=%d", seed+1), func(t *testing.T) {
			runPartlySuperseded(t, seed+1)
		})
	}
}

func runPartlySuperseded(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 11))
	n := newTestNetWithSchema(t, 3+rng.IntN(2), policySchema(PolicyNewest, ""))
	n.reorder = true
	ids := []string{"c1", "c2"}
	fieldNames := []string{"last_name", "first_name", "phone"}
	written := map[string][]string{} // "id/field" -> ops written
	superseded := map[string]bool{}  // "id/field/opid" replaced by a writer that saw it
	for _, id := range ids {         // every record starts with all fields on every replica
		res := mustPut(t, n.replicas[0], "contacts", id, map[string]any{"last_name": "L0", "first_name": "F0", "phone": "P0"})
		for _, f := range fieldNames {
			written[id+"/"+f] = append(written[id+"/"+f], res.Op.String())
		}
	}
	n.waitConverged(10 * time.Second)
	now := epoch
	for step := 0; step < 60; step++ {
		now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
		i := rng.IntN(len(n.replicas))
		r := n.replicas[i]
		if rng.IntN(6) == 0 {
			n.mu.Lock()
			online := r.online
			n.mu.Unlock()
			n.setOnline(i, !online)
			continue
		}
		r.clock.Set(now.Add(time.Duration(rng.IntN(600)-300) * time.Second))
		id := ids[rng.IntN(len(ids))]
		fields := map[string]any{}
		for _, f := range fieldNames {
			if rng.IntN(2) == 0 {
				fields[f] = fmt.Sprintf("%s%d", f[:1], step)
			}
		}
		if len(fields) == 0 {
			fields["phone"] = fmt.Sprintf("p%d", step)
		}
		// A peer's delta that supersedes every field of a record is
		// merged by go-ds-crdt in two commits (its tombstones, then its
		// element): a put that reads the record in between finds none and
		// is refused as a new record without its required fields. Nothing
		// is written; the put is tried again, as a person would (a known
		// limit, docs/merge-rules.md).
		var res PutResult
		var err error
		waitFor(t, 5*time.Second, "a put not caught between two commits of a merge", func() bool {
			res, err = r.Put(context.Background(), "contacts", id, fields)
			return err == nil || !strings.Contains(err.Error(), "is required")
		})
		if err != nil {
			t.Fatalf("put on %s: %v", r.writer, err)
		}
		for _, f := range res.Fields {
			written[id+"/"+f] = append(written[id+"/"+f], res.Op.String())
		}
	}
	for i := range n.replicas {
		n.setOnline(i, true)
	}
	n.waitConverged(20 * time.Second)
	// What each writer saw and replaced, from the whole history (every
	// write ever made, tombstoned or not): the ops a write lists as
	// superseded.
	for _, id := range ids {
		h, err := n.replicas[0].History(context.Background(), "contacts", id, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(h) == 0 {
			t.Fatal("no history")
		}
		for _, e := range h {
			for _, ref := range e.Supersedes {
				superseded[id+"/"+ref] = true
			}
		}
	}
	for _, r := range n.all() {
		for _, id := range ids {
			rec := mustGet(t, r, "contacts", id)
			for _, f := range fieldNames {
				var want []string
				for _, op := range written[id+"/"+f] {
					if !superseded[id+"/"+f+"/"+op] {
						want = append(want, op)
					}
				}
				var got []string
				if fv, ok := rec.Fields[f]; ok {
					if len(fv.Candidates) == 0 {
						got = append(got, fv.Op.String())
					}
					for _, c := range fv.Candidates {
						got = append(got, c.Op.String())
					}
				}
				slices.Sort(want)
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Errorf("replica %s: %s.%s shows ops %v, want %v", r.writer, id, f, got, want)
					if testing.Verbose() {
						h, _ := r.History(context.Background(), "contacts", id, "")
						for _, e := range h {
							t.Logf("  %s %s=%v visible=%v sup=%v", e.Op, e.Field, e.Value, e.Visible, e.Supersedes)
						}
					}
				}
			}
		}
	}
}

// TestRetiredWriterCarriesSupersedes: a write that replaces the last live
// field of an earlier write tombstones that write, and one that replaces a
// write whose supersede facts still matter carries them on, so a replica
// that never saw the intermediate write still keeps the old value dead.
func TestRetiredWriterCarriesSupersedes(t *testing.T) {
	n := newTestNetWithSchema(t, 2, policySchema(PolicyNewest, ""))
	a, b := n.replicas[0], n.replicas[1]
	ctx := context.Background()
	n.setOnline(1, false)
	w1 := mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Smith", "first_name": "Jeff"})
	w2 := mustPut(t, a, "contacts", "c1", map[string]any{"first_name": "John"})   // kills w1's first_name
	w3 := mustPut(t, a, "contacts", "c1", map[string]any{"first_name": "Johnny"}) // retires w2, carries w1's first_name
	eid, _ := EscapeID("c1")
	visible := func(r *replica) []string {
		var ks []string
		if err := r.scan(ctx, recordPrefix("contacts", eid).String()+"/", func(kp keyParts, _ *write) error {
			ks = append(ks, kp.Op.String())
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return ks
	}
	if got, want := visible(a), []string{w1.Op.String(), w3.Op.String()}; !slices.Equal(got, want) {
		t.Fatalf("visible writes %v, want %v (w2 retired)", got, want)
	}
	hist, err := a.History(ctx, "contacts", "c1", "first_name")
	if err != nil {
		t.Fatal(err)
	}
	var sup []string
	for _, e := range hist {
		if e.Op == w3.Op {
			sup = e.Supersedes
		}
	}
	if !slices.Contains(sup, "first_name/"+w1.Op.String()) || !slices.Contains(sup, "first_name/"+w2.Op.String()) {
		t.Fatalf("w3 supersedes %v: want w1's and w2's first_name", sup)
	}
	n.setOnline(1, true)
	n.waitConverged(10 * time.Second)
	for _, r := range []*replica{a, b} {
		got := mustGet(t, r, "contacts", "c1")
		if v := got.Values(); v["first_name"] != "Johnny" || v["last_name"] != "Smith" || got.Conflicted() {
			t.Errorf("replica %s: %v (conflicted %v)", r.writer, v, got.Conflicted())
		}
	}
	// The last field of w1 replaced: w1 goes too.
	mustPut(t, b, "contacts", "c1", map[string]any{"last_name": "Rodman"})
	n.waitConverged(10 * time.Second)
	for _, r := range []*replica{a, b} {
		ks := visible(r)
		if len(ks) != 2 || slices.Contains(ks, w1.Op.String()) {
			t.Errorf("replica %s: visible writes %v", r.writer, ks)
		}
		if v := mustGet(t, r, "contacts", "c1").Values(); !maps.Equal(v, map[string]any{"first_name": "Johnny", "last_name": "Rodman"}) {
			t.Errorf("replica %s: %v", r.writer, v)
		}
	}
}
