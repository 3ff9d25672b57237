package crdt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func policySchema(collectionPolicy, phonePolicy string) string {
	s := "\ncollections:\n  contacts:\n"
	if collectionPolicy != "" {
		s += "    policy: " + collectionPolicy + "\n"
	}
	s += "    fields:\n      last_name: {type: string, required: true}\n      first_name: {type: string}\n"
	if phonePolicy != "" {
		s += "      phone: {type: string, policy: " + phonePolicy + "}\n"
	} else {
		s += "      phone: {type: string}\n"
	}
	return s
}

// concurrentPhones makes the office (replica A) and a laptop (B) write the
// phone of c1 while apart, at the given times, then reconnects them.
func concurrentPhones(t *testing.T, n *testNet, officeAt, laptopAt time.Time) {
	t.Helper()
	mustPut(t, n.replicas[0], "contacts", "c1", map[string]any{"last_name": "Smith", "phone": "0"})
	n.waitConverged(10 * time.Second)
	n.setOnline(0, false)
	n.setOnline(1, false)
	n.replicas[0].clock.Set(officeAt)
	mustPut(t, n.replicas[0], "contacts", "c1", map[string]any{"phone": "office"})
	n.replicas[1].clock.Set(laptopAt)
	mustPut(t, n.replicas[1], "contacts", "c1", map[string]any{"phone": "laptop"})
	n.setOnline(0, true)
	n.setOnline(1, true)
	n.waitConverged(10 * time.Second)
}

func TestPoliciesDecideFieldConflicts(t *testing.T) {
	early, late := epoch.Add(time.Hour), epoch.Add(2*time.Hour)
	cases := []struct {
		collPolicy, fieldPolicy string
		officeLater             bool
		want                    string
		open                    bool
	}{
		{"", "", false, "laptop", false},             // newest (default): the laptop wrote later
		{"newest", "", true, "office", false},        // newest: the office wrote later
		{"office", "", false, "office", false},       // office wins although older
		{"laptop", "", true, "laptop", false},        // laptop wins although older
		{"manual", "", false, "laptop", true},        // manual: newest shown, conflict open
		{"newest", "office", false, "office", false}, // field policy overrides the collection's
		{"office", "newest", false, "laptop", false}, // and the other way round
		{"manual", "laptop", true, "laptop", false},  // a decided field in a manual collection
	}
	for _, tc := range cases {
		name := fmt.Sprintf("coll=%s/field=%s/officeLater=%t", tc.collPolicy, tc.fieldPolicy, tc.officeLater)
		t.Run(name, func(t *testing.T) {
			n := newTestNetWithSchema(t, 3, policySchema(tc.collPolicy, tc.fieldPolicy))
			officeAt, laptopAt := early, late
			if tc.officeLater {
				officeAt, laptopAt = late, early
			}
			concurrentPhones(t, n, officeAt, laptopAt)
			for _, r := range n.all() {
				f := mustGet(t, r, "contacts", "c1").Fields["phone"]
				if f.Value != tc.want || f.Open != tc.open || len(f.Candidates) != 2 || f.Candidates[0].Value != tc.want {
					t.Errorf("replica %s: phone=%v open=%t candidates=%v, want %s open=%t", r.writer, f.Value, f.Open, f.Candidates, tc.want, tc.open)
				}
			}
		})
	}
}

func TestManualConflictResolvedOnOneNodeDisappearsEverywhere(t *testing.T) {
	n := newTestNetWithSchema(t, 3, policySchema("manual", ""))
	ctx := context.Background()
	concurrentPhones(t, n, epoch.Add(time.Hour), epoch.Add(2*time.Hour))
	var listed []Conflict
	if err := n.replicas[2].Conflicts(ctx, nil, func(c Conflict) error { listed = append(listed, c); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].Field != "phone" || !listed[0].Open || len(listed[0].Candidates) != 2 {
		t.Fatalf("conflicts on C: %+v", listed)
	}
	// C, a third node, picks the office's value (candidate 2).
	if _, err := n.replicas[2].Resolve(ctx, "contacts", "c1", "phone", Resolution{Pick: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.replicas[2].Resolve(ctx, "contacts", "c1", "phone", Resolution{Pick: 1}); !errors.Is(err, ErrNoConflict) {
		t.Errorf("resolving twice: want ErrNoConflict, got %v", err)
	}
	n.waitConverged(10 * time.Second)
	for _, r := range n.all() {
		f := mustGet(t, r, "contacts", "c1").Fields["phone"]
		if f.Value != "office" || f.Conflicted() {
			t.Errorf("replica %s: phone=%v candidates=%v after resolution", r.writer, f.Value, f.Candidates)
		}
		count := 0
		_ = r.Conflicts(ctx, nil, func(Conflict) error { count++; return nil })
		if count != 0 {
			t.Errorf("replica %s still lists %d conflicts", r.writer, count)
		}
	}
}

func TestResolveWithAValueAndStaleResolution(t *testing.T) {
	n := newTestNetWithSchema(t, 2, policySchema("manual", ""))
	ctx := context.Background()
	concurrentPhones(t, n, epoch.Add(time.Hour), epoch.Add(2*time.Hour))
	cs, err := n.replicas[1].RecordConflicts(ctx, "contacts", "c1")
	if err != nil || len(cs) != 1 {
		t.Fatalf("%v %v", cs, err)
	}
	stale := []OpID{cs[0].Candidates[1].Op, cs[0].Candidates[0].Op}
	if _, err := n.replicas[1].Resolve(ctx, "contacts", "c1", "phone", Resolution{Value: "x", Expect: stale}); err == nil {
		t.Error("a resolution of a conflict that changed must be refused")
	}
	if _, err := n.replicas[1].Resolve(ctx, "contacts", "c1", "last_name", Resolution{Value: "x"}); !errors.Is(err, ErrNoConflict) {
		t.Errorf("resolving a field without conflict: %v", err)
	}
	if _, err := n.replicas[1].Resolve(ctx, "contacts", "c1", "phone", Resolution{Pick: 3}); err == nil {
		t.Error("--pick out of range accepted")
	}
	if _, err := n.replicas[1].Resolve(ctx, "contacts", "c1", "phone", Resolution{Value: 12.0}); err == nil {
		t.Error("a value of the wrong type accepted")
	}
	if _, err := n.replicas[1].Resolve(ctx, "contacts", "c1", "phone", Resolution{Value: "merged", Expect: []OpID{cs[0].Candidates[0].Op, cs[0].Candidates[1].Op}}); err != nil {
		t.Fatal(err)
	}
	n.waitConverged(10 * time.Second)
	for _, r := range n.all() {
		if f := mustGet(t, r, "contacts", "c1").Fields["phone"]; f.Value != "merged" || f.Conflicted() {
			t.Errorf("replica %s: %v %v", r.writer, f.Value, f.Candidates)
		}
	}
}

// A delete concurrent with an edit follows the collection policy.
func TestRecordConflictFollowsPolicy(t *testing.T) {
	cases := []struct {
		policy      string
		wantDeleted bool
		open        bool
	}{
		{"newest", false, false}, // the laptop's edit is newer
		{"office", true, false},  // the office deleted
		{"laptop", false, false}, // the laptop edited
		{"manual", false, true},  // newest shown, open
	}
	for _, tc := range cases {
		t.Run(tc.policy, func(t *testing.T) {
			n := newTestNetWithSchema(t, 3, policySchema(tc.policy, ""))
			ctx := context.Background()
			mustPut(t, n.replicas[0], "contacts", "c1", map[string]any{"last_name": "Smith", "first_name": "Jeff"})
			n.waitConverged(10 * time.Second)
			n.setOnline(0, false)
			n.setOnline(1, false)
			n.replicas[0].clock.Set(epoch.Add(time.Hour))
			if _, err := n.replicas[0].Delete(ctx, "contacts", "c1"); err != nil {
				t.Fatal(err)
			}
			n.replicas[1].clock.Set(epoch.Add(2 * time.Hour))
			mustPut(t, n.replicas[1], "contacts", "c1", map[string]any{"phone": "555"})
			n.setOnline(0, true)
			n.setOnline(1, true)
			n.waitConverged(10 * time.Second)
			for _, r := range n.all() {
				_, err := r.Get(ctx, "contacts", "c1")
				if deleted := errors.Is(err, ErrNotFound); deleted != tc.wantDeleted {
					t.Errorf("replica %s: deleted=%t (%v), want %t", r.writer, deleted, err, tc.wantDeleted)
				}
				cs, err := r.RecordConflicts(ctx, "contacts", "c1")
				if err != nil || len(cs) != 1 || cs[0].Field != RecordField || cs[0].Open != tc.open || len(cs[0].Candidates) != 2 {
					t.Errorf("replica %s: record conflicts %+v %v", r.writer, cs, err)
				}
			}
			if tc.policy != "manual" {
				return
			}
			// A person decides: delete (the delete is candidate 2, the edit shows).
			if _, err := n.replicas[2].Resolve(ctx, "contacts", "c1", RecordField, Resolution{Pick: 2}); err != nil {
				t.Fatal(err)
			}
			n.waitConverged(10 * time.Second)
			for _, r := range n.all() {
				if _, err := r.Get(ctx, "contacts", "c1"); !errors.Is(err, ErrNotFound) {
					t.Errorf("replica %s: want deleted after resolution, got %v", r.writer, err)
				}
				if cs, _ := r.RecordConflicts(ctx, "contacts", "c1"); len(cs) != 0 {
					t.Errorf("replica %s: conflict left after resolution: %+v", r.writer, cs)
				}
			}
		})
	}
}

func TestRecordConflictKeepBringsBackEveryField(t *testing.T) {
	n := newTestNetWithSchema(t, 2, policySchema("manual", ""))
	ctx := context.Background()
	mustPut(t, n.replicas[0], "contacts", "c1", map[string]any{"last_name": "Smith", "first_name": "Jeff"})
	n.waitConverged(10 * time.Second)
	n.setOnline(0, false)
	n.setOnline(1, false)
	n.replicas[0].clock.Set(epoch.Add(2 * time.Hour))
	if _, err := n.replicas[0].Delete(ctx, "contacts", "c1"); err != nil {
		t.Fatal(err)
	}
	n.replicas[1].clock.Set(epoch.Add(time.Hour))
	mustPut(t, n.replicas[1], "contacts", "c1", map[string]any{"phone": "555"})
	n.setOnline(0, true)
	n.setOnline(1, true)
	n.waitConverged(10 * time.Second)
	if _, err := n.replicas[1].Get(ctx, "contacts", "c1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the newer delete must show while open: %v", err)
	}
	// Keep: pick the edit (candidate 2; the delete shows first).
	if _, err := n.replicas[1].Resolve(ctx, "contacts", "c1", RecordField, Resolution{Pick: 2}); err != nil {
		t.Fatal(err)
	}
	n.waitConverged(10 * time.Second)
	for _, r := range n.all() {
		got := mustGet(t, r, "contacts", "c1").Values()
		if got["first_name"] != "Jeff" || got["last_name"] != "Smith" || got["phone"] != "555" {
			t.Errorf("replica %s: %v", r.writer, got)
		}
	}
}

func TestHistory(t *testing.T) {
	n := newTestNet(t, 2)
	a, b := n.replicas[0], n.replicas[1]
	ctx := context.Background()
	mustPut(t, a, "contacts", "c1", map[string]any{"last_name": "Smith", "first_name": "Jeff"})
	n.waitConverged(10 * time.Second)
	mustPut(t, b, "contacts", "c1", map[string]any{"first_name": "John"})
	n.waitConverged(10 * time.Second)
	if _, err := a.Delete(ctx, "contacts", "c1"); err != nil {
		t.Fatal(err)
	}
	n.waitConverged(10 * time.Second)
	h, err := a.History(ctx, "contacts", "c1", "first_name")
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Value != "Jeff" || h[1].Value != "John" {
		t.Fatalf("first_name history: %+v", h)
	}
	if h[0].Visible || !h[1].Visible || !h[0].Local || h[1].Local || !h[0].Block.Defined() {
		t.Errorf("flags: %+v", h)
	}
	if len(h[1].Supersedes) != 1 || !strings.HasPrefix(h[1].Supersedes[0], "first_name/"+h[0].Op.String()) {
		t.Errorf("John must supersede Jeff: %v", h[1].Supersedes)
	}
	all, err := b.History(ctx, "contacts", "c1", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 || all[3].Field != DeleteField || len(all[3].Seen) != 2 || all[3].Local {
		t.Errorf("whole record history on B: %+v", all)
	}
}
