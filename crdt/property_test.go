package crdt

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestConvergenceProperty drives random concurrent edits and deletes on 3 to
// 5 replicas under random partitions and clock skew, then heals the network
// and checks that every replica shows the same records, values and conflict
// candidates.
func TestConvergenceProperty(t *testing.T) {
	perPolicy := 6
	if testing.Short() {
		perPolicy = 1
	}
	for _, policy := range []string{PolicyNewest, PolicyOffice, PolicyLaptop, PolicyManual} {
		for c := range perPolicy {
			seed := uint64(c + 1)
			t.Run(fmt.Sprintf("%s/seed=%d", policy, seed), func(t *testing.T) {
				runConvergenceCase(t, policy, seed)
			})
		}
	}
}

// runConvergenceCase drives random concurrent edits, deletes and
// resolutions on 3 to 5 replicas under random partitions, clock skew of up
// to ten minutes and reordered delivery, then heals the network and checks
// that every replica shows the same records, values, conflict candidates,
// open flags and record conflicts.
func runConvergenceCase(t *testing.T, policy string, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	n := newTestNetWithSchema(t, 3+rng.IntN(3), policySchema(policy, ""))
	n.reorder = true
	ctx := context.Background()
	ids := []string{"c1", "c2", "c3", "c/4"}
	values := []string{"Ann", "Bob", "Cid", "Dee"}
	now := epoch
	for step := 0; step < 40; step++ {
		if rng.IntN(3) == 0 { // keep digests up to date incrementally as we go
			if _, err := n.replicas[rng.IntN(len(n.replicas))].Digest(ctx); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
		i := rng.IntN(len(n.replicas))
		r := n.replicas[i]
		skew := time.Duration(rng.IntN(1200)-600) * time.Second // ±10 minutes
		r.clock.Set(now.Add(skew))
		id := ids[rng.IntN(len(ids))]
		switch op := rng.IntN(12); {
		case op < 2:
			n.mu.Lock()
			online := r.online
			n.mu.Unlock()
			n.setOnline(i, !online)
		case op < 3:
			if _, err := r.Delete(ctx, "contacts", id); err != nil && !isNotFound(err) {
				t.Fatal(err)
			}
		case op < 4:
			cs, err := r.RecordConflicts(ctx, "contacts", id)
			if err != nil {
				t.Fatal(err)
			}
			if len(cs) > 0 {
				// A merge between listing and resolving may end or change it.
				c := cs[rng.IntN(len(cs))]
				if _, err := r.Resolve(ctx, "contacts", id, c.Field, Resolution{Pick: 1 + rng.IntN(len(c.Candidates))}); err != nil &&
					!errors.Is(err, ErrBadResolution) && !errors.Is(err, ErrNoConflict) {
					t.Fatal(err)
				}
			}
		default:
			fields := map[string]any{"last_name": values[rng.IntN(len(values))]}
			if rng.IntN(2) == 0 {
				fields["first_name"] = values[rng.IntN(len(values))]
			}
			if rng.IntN(3) == 0 {
				fields["phone"] = nil
			} else if rng.IntN(2) == 0 {
				fields["phone"] = values[rng.IntN(len(values))]
			}
			if _, err := r.Put(ctx, "contacts", id, fields); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range n.replicas {
		n.setOnline(i, true)
	}
	n.waitConverged(20 * time.Second)
	want := dump(t, n.replicas[0], "contacts")
	for _, r := range n.all()[1:] {
		if got := dump(t, r, "contacts"); got != want {
			t.Fatalf("replica %s diverged:\n%s\nreplica A:\n%s", r.writer, got, want)
		}
	}
	checkDigests(t, n)
}

// checkDigests checks that converged replicas have the same digest, and that
// each replica's incrementally kept digest equals one computed from scratch.
func checkDigests(t *testing.T, n *testNet) {
	t.Helper()
	ctx := context.Background()
	var first Digest
	for i, r := range n.all() {
		d, err := r.Digest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r.digest.mu.Lock()
		r.digest.built = false
		r.digest.mu.Unlock()
		full, err := r.Digest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d != full {
			t.Errorf("replica %s: incremental digest %s, from scratch %s", r.writer, d, full)
		}
		if i == 0 {
			first = d
		} else if d != first {
			t.Errorf("replica %s: digest %s, replica A %s", r.writer, d, first)
		}
	}
}

func isNotFound(err error) bool { return err != nil && errors.Is(err, ErrNotFound) }

// TestConvergencePropertyTrust is the property test of a network with a
// trust model: besides edits, deletes and partitions, the office revokes and
// re-enrols laptops, and modified clients write forged or forbidden
// operations straight into their stores. Replicas must still converge on
// the same visible state and the same ignored operations.
func TestConvergencePropertyTrust(t *testing.T) {
	seeds := 6
	if testing.Short() {
		seeds = 1
	}
	for c := range seeds {
		seed := uint64(c + 1)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			runTrustCase(t, seed)
		})
	}
}

func runTrustCase(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 11))
	n := newTrustNet(t, 4, "Z")
	n.reorder = true
	ctx := context.Background()
	ids := []string{"c1", "c2", "c3"}
	values := []string{"Ann", "Bob", "Cid", "Dee"}
	now := epoch
	for step := 0; step < 40; step++ {
		now = now.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
		i := rng.IntN(len(n.replicas))
		r := n.replicas[i]
		r.clock.Set(now.Add(time.Duration(rng.IntN(1200)-600) * time.Second))
		id := ids[rng.IntN(len(ids))]
		switch op := rng.IntN(14); {
		case op < 2:
			n.mu.Lock()
			online := r.online
			n.mu.Unlock()
			n.setOnline(i, !online)
		case op < 3: // the office revokes or re-enrols a laptop
			who := string(rune('B' + rng.IntN(3)))
			m, _, _ := n.replicas[0].Member(ctx, who)
			var err error
			if m.Revoked {
				err = n.replicas[0].AddMember(ctx, who, "node "+who, RoleLaptop)
			} else {
				err = n.replicas[0].RevokeMember(ctx, who)
			}
			if err != nil {
				t.Fatal(err)
			}
		case op < 4: // a forged write: as another writer, or by a stranger
			writer, signer := "A", "C"
			if rng.IntN(2) == 0 {
				writer, signer = "Z", "Z"
			}
			rawWrite(t, r, "contacts", id, "last_name", values[rng.IntN(len(values))], writer, n.keys[signer])
		case op < 5: // a laptop's modified client writes an office-only collection
			rawWrite(t, r, "prices", "p1", "amount", float64(rng.IntN(100)), r.writer, n.keys[r.writer])
		case op < 6:
			if _, err := r.Delete(ctx, "contacts", id); err != nil && !isNotFound(err) && !errors.Is(err, ErrNotMember) {
				t.Fatal(err)
			}
		default:
			fields := map[string]any{"last_name": values[rng.IntN(len(values))]}
			if rng.IntN(2) == 0 {
				fields["phone"] = values[rng.IntN(len(values))]
			}
			coll := "contacts"
			if i == 0 && rng.IntN(4) == 0 {
				coll, id, fields = "prices", "p1", map[string]any{"amount": float64(rng.IntN(100))}
			}
			if _, err := r.Put(ctx, coll, id, fields); err != nil && !errors.Is(err, ErrNotMember) {
				t.Fatal(err)
			}
		}
	}
	for i := range n.replicas {
		n.setOnline(i, true)
	}
	n.waitConverged(20 * time.Second)
	want := dump(t, n.replicas[0], "contacts") + dump(t, n.replicas[0], "prices")
	wantIgnored, err := n.replicas[0].Ignored(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d operations ignored", len(wantIgnored))
	for _, r := range n.all()[1:] {
		if got := dump(t, r, "contacts") + dump(t, r, "prices"); got != want {
			t.Fatalf("replica %s diverged:\n%s\nreplica A:\n%s", r.writer, got, want)
		}
		ig, err := r.Ignored(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ig) != fmt.Sprint(wantIgnored) {
			t.Errorf("replica %s ignores %v\nreplica A ignores %v", r.writer, ig, wantIgnored)
		}
	}
	checkDigests(t, n)
}
