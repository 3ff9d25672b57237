package crdt

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
	"time"
)

const trustSchema = testSchema + `
  prices:
    writers: office
    fields:
      amount: {type: number}
`

// newTrustNet starts n replicas with a trust model: A founds the network
// and enrols the others as laptops. Extra keys (not enrolled) can sign.
func newTrustNet(t *testing.T, n int, extra ...string) *testNet {
	t.Helper()
	keys := testKeys(n)
	for i, w := range extra {
		seed := make([]byte, ed25519.SeedSize)
		seed[0], seed[1] = 0xee, byte(i)
		keys[w] = ed25519.NewKeyFromSeed(seed)
	}
	return newTestNetWith(t, n, trustSchema, keys)
}

// rawWrite writes one operation the way a modified client would: straight
// into r's go-ds-crdt, as writer, signed with signer (nil: unsigned),
// tombstoning the visible ops of the field.
func rawWrite(t *testing.T, r *replica, coll, id, field string, value any, writer string, signer ed25519.PrivateKey) OpID {
	t.Helper()
	ctx := context.Background()
	eid, err := EscapeID(id)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := r.readRecord(ctx, coll, eid)
	if err != nil {
		t.Fatal(err)
	}
	op := Op{ID: OpID{Time: r.Store.clock.Now(), Writer: writer}, Field: field, Value: value}
	for _, old := range cur.fields[field] {
		op.Supersedes = append(op.Supersedes, old.Ref())
	}
	w := &write{ID: op.ID, Ops: []Op{op}}
	_, tombs, err := r.retire(ctx, coll, eid, cur, w)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.eng().Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range tombs {
		if err := b.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	key := writeKey(coll, eid, op.ID)
	data, err := encodeWrite(w)
	if err != nil {
		t.Fatal(err)
	}
	if signer != nil {
		data = append(data, ed25519.Sign(signer, writeMessage(key.String(), data))...)
	}
	if err := b.Put(ctx, key, data); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return op.ID
}

// expectEverywhere checks a field's shown value on every replica, and that
// the op is listed as ignored for the reason given.
func expectEverywhere(t *testing.T, tn *testNet, coll, id, field string, want any, ignored OpID, reason string) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, 10*time.Second, "the ignored op to be listed everywhere", func() bool {
		for _, r := range tn.all() {
			ig, err := r.Ignored(ctx)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, o := range ig {
				found = found || o.Op == ignored && o.Reason == reason
			}
			if !found {
				return false
			}
		}
		return true
	})
	var digest Digest
	for i, r := range tn.all() {
		rec, err := r.Get(ctx, coll, id)
		if err != nil {
			t.Fatalf("%s: get %s/%s: %v", r.writer, coll, id, err)
		}
		f := rec.Fields[field]
		if f.Value != want || f.Conflicted() {
			t.Errorf("%s: %s/%s %s = %v (candidates %v), want %v alone", r.writer, coll, id, field, f.Value, f.Candidates, want)
		}
		d, err := r.Digest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && d != digest {
			t.Errorf("%s: digest %s differs from %s", r.writer, d, digest)
		}
		digest = d
	}
}

func TestTrustMembersSignAndConverge(t *testing.T) {
	tn := newTrustNet(t, 3)
	a, b := tn.replicas[0], tn.replicas[1]
	ctx := context.Background()
	mustPut(t, b, "contacts", "c1", map[string]any{"last_name": "Smith"})
	tn.waitConverged(10 * time.Second)
	for _, r := range tn.all() {
		if got := mustGet(t, r, "contacts", "c1").Fields["last_name"].Value; got != "Smith" {
			t.Errorf("%s: last_name %v", r.writer, got)
		}
		ms, err := r.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != 3 || !ms[0].Founder || ms[0].Role != RoleOffice || ms[1].Role != RoleLaptop || ms[2].ID != "C" {
			t.Errorf("%s: members %+v", r.writer, ms)
		}
		if ig, _ := r.Ignored(ctx); len(ig) != 0 {
			t.Errorf("%s: ignored %+v", r.writer, ig)
		}
	}
	// Only an office changes the membership or the schema.
	if err := b.AddMember(ctx, "Z", "z", RoleOffice); !errors.Is(err, ErrForbidden) {
		t.Errorf("laptop adds a member: %v, want ErrForbidden", err)
	}
	if err := b.RevokeMember(ctx, "A"); !errors.Is(err, ErrForbidden) {
		t.Errorf("revoke the founder: %v, want ErrForbidden", err)
	}
	if err := a.RevokeMember(ctx, "A"); !errors.Is(err, ErrForbidden) {
		t.Errorf("founder revokes itself: %v, want ErrForbidden", err)
	}
	sc, _ := b.Schema(ctx)
	if _, err := b.ApplySchema(ctx, sc); !errors.Is(err, ErrForbidden) {
		t.Errorf("laptop applies the schema: %v, want ErrForbidden", err)
	}
}

func TestTrustOfficeOnlyCollection(t *testing.T) {
	tn := newTrustNet(t, 3)
	a, c := tn.replicas[0], tn.replicas[2]
	ctx := context.Background()
	mustPut(t, a, "prices", "p1", map[string]any{"amount": 10.0})
	tn.waitConverged(10 * time.Second)
	if _, err := c.Put(ctx, "prices", "p1", map[string]any{"amount": 1.0}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("laptop writes an office-only collection: %v, want ErrForbidden", err)
	}
	// A modified client writes anyway, superseding the office's price.
	forged := rawWrite(t, c, "prices", "p1", "amount", 1.0, "C", tn.keys["C"])
	tn.waitConverged(10 * time.Second)
	expectEverywhere(t, tn, "prices", "p1", "amount", 10.0, forged, ReasonRole)
}

func TestTrustForgedSignature(t *testing.T) {
	tn := newTrustNet(t, 3)
	b, c := tn.replicas[1], tn.replicas[2]
	mustPut(t, b, "contacts", "c1", map[string]any{"last_name": "Smith"})
	tn.waitConverged(10 * time.Second)
	// C writes as B, signing with its own key; then as B, unsigned.
	forged := rawWrite(t, c, "contacts", "c1", "last_name", "Forged", "B", tn.keys["C"])
	tn.waitConverged(10 * time.Second)
	expectEverywhere(t, tn, "contacts", "c1", "last_name", "Smith", forged, ReasonBadSignature)
	unsigned := rawWrite(t, c, "contacts", "c1", "last_name", "Unsigned", "B", nil)
	tn.waitConverged(10 * time.Second)
	expectEverywhere(t, tn, "contacts", "c1", "last_name", "Smith", unsigned, ReasonBadSignature)
	// A node restarted keeps the marks (they were written with the ops).
	c.stop()
	c = tn.start(2, c.dir)
	tn.setOnline(2, true)
	if got := mustGet(t, c, "contacts", "c1").Fields["last_name"].Value; got != "Smith" {
		t.Errorf("after restart: last_name %v", got)
	}
}

func TestTrustNotMember(t *testing.T) {
	tn := newTrustNet(t, 3, "Z")
	b, c := tn.replicas[1], tn.replicas[2]
	mustPut(t, b, "contacts", "c1", map[string]any{"last_name": "Smith"})
	tn.waitConverged(10 * time.Second)
	// Z holds a key but was never enrolled: its ops, relayed by C, count
	// nowhere.
	stranger := rawWrite(t, c, "contacts", "c1", "last_name", "Stranger", "Z", tn.keys["Z"])
	tn.waitConverged(10 * time.Second)
	expectEverywhere(t, tn, "contacts", "c1", "last_name", "Smith", stranger, ReasonNotMember)
}

func TestTrustUnenrolledNodeCannotWrite(t *testing.T) {
	keys := testKeys(2)
	tn := newTestNetWith(t, 2, trustSchema, keys)
	ctx := context.Background()
	// A third replica with a key, never enrolled.
	keys["C"] = testKeys(3)["C"]
	tn.replicas = append(tn.replicas, nil)
	c := tn.start(2, t.TempDir())
	tn.setOnline(2, true)
	waitFor(t, 10*time.Second, "the schema to reach C", func() bool {
		_, err := c.Collection(ctx, "contacts")
		return err == nil
	})
	if _, err := c.Put(ctx, "contacts", "c9", map[string]any{"last_name": "X"}); !errors.Is(err, ErrNotMember) {
		t.Fatalf("unenrolled put: %v, want ErrNotMember", err)
	}
}

func TestTrustRevocation(t *testing.T) {
	tn := newTrustNet(t, 3)
	a, b := tn.replicas[0], tn.replicas[1]
	ctx := context.Background()
	mustPut(t, b, "contacts", "c1", map[string]any{"last_name": "Smith", "phone": "1"})
	tn.waitConverged(10 * time.Second)

	tn.setOnline(1, false)
	for _, r := range tn.all() {
		r.clock.Set(epoch.Add(time.Minute))
	}
	if err := a.RevokeMember(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	// B has not heard of it and keeps writing, later.
	b.clock.Set(epoch.Add(2 * time.Minute))
	later := mustPut(t, b, "contacts", "c1", map[string]any{"phone": "2"}).Op
	created := mustPut(t, b, "contacts", "c2", map[string]any{"last_name": "New"}).Op
	tn.setOnline(1, true)
	tn.waitConverged(10 * time.Second)

	expectEverywhere(t, tn, "contacts", "c1", "phone", "1", later, ReasonRevoked)
	expectEverywhere(t, tn, "contacts", "c1", "last_name", "Smith", created, ReasonRevoked)
	for _, r := range tn.all() {
		if _, err := r.Get(ctx, "contacts", "c2"); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: c2 written after the revocation: %v, want not found", r.writer, err)
		}
		m, ok, err := r.Member(ctx, "B")
		if err != nil || !ok || !m.Revoked || m.By != "A" {
			t.Errorf("%s: member B %+v %t %v", r.writer, m, ok, err)
		}
	}
	if _, err := b.Put(ctx, "contacts", "c1", map[string]any{"phone": "3"}); !errors.Is(err, ErrNotMember) {
		t.Errorf("revoked node writes: %v, want ErrNotMember", err)
	}
	// Enrolled again, it writes again.
	if err := a.AddMember(ctx, "B", "node B", RoleLaptop); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	mustPut(t, b, "contacts", "c1", map[string]any{"phone": "4"})
	tn.waitConverged(10 * time.Second)
	for _, r := range tn.all() {
		if got := mustGet(t, r, "contacts", "c1").Fields["phone"].Value; got != "4" {
			t.Errorf("%s: phone %v after re-enrolment", r.writer, got)
		}
	}
}

func TestTrustImportIsSigned(t *testing.T) {
	tn := newTrustNet(t, 2)
	a, b := tn.replicas[0], tn.replicas[1]
	ctx := context.Background()
	var recs []ImportRecord
	for i := range 60 { // enough to sign on every core
		recs = append(recs, ImportRecord{Line: i + 1, ID: fmt.Sprintf("i%d", i), Fields: map[string]any{"last_name": "L", "phone": fmt.Sprint(i)}})
	}
	if _, err := a.Import(ctx, "contacts", recs, nil); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	for _, r := range []*replica{a, b} {
		n := 0
		if err := r.List(ctx, "contacts", func(*Record) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		ig, _ := r.Ignored(ctx)
		if n != 60 || len(ig) != 0 {
			t.Errorf("%s: %d records, %d ignored", r.writer, n, len(ig))
		}
	}
}

// TestTrustReplay: a member copies another member's write, signature and
// all, into a delta of its own: the copy verifies (the signature covers the
// write's key and stored form, not the block) and changes nothing. A forged
// write (another value under the signature of the first) is ignored
// everywhere.
func TestTrustReplay(t *testing.T) {
	tn := newTrustNet(t, 3)
	b, c := tn.replicas[1], tn.replicas[2]
	ctx := context.Background()
	res := mustPut(t, b, "contacts", "c1", map[string]any{"last_name": "Smith", "phone": "1"})
	tn.waitConverged(10 * time.Second)
	eid, _ := EscapeID("c1")
	key := writeKey("contacts", eid, res.Op)
	stored, err := c.eng().Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.eng().Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Put(ctx, key, stored); err != nil {
		t.Fatal(err)
	}
	if err := batch.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	for _, r := range tn.all() {
		rec := mustGet(t, r, "contacts", "c1")
		if rec.Fields["phone"].Value != "1" || rec.Fields["last_name"].Value != "Smith" {
			t.Errorf("%s: c1 %v", r.writer, rec.Values())
		}
		if ig, _ := r.Ignored(ctx); len(ig) != 0 {
			t.Errorf("%s: ignores %v", r.writer, ig)
		}
	}
	// The same signature on another write (a newer op id, another phone)
	// does not verify.
	kp, _ := parseOpKey(key.String())
	w, err := decodeWrite(kp, stored)
	if err != nil {
		t.Fatal(err)
	}
	forgedID := OpID{Time: res.Op.Time + 1, Writer: res.Op.Writer}
	fw := &write{ID: forgedID}
	for _, op := range w.Ops {
		op.ID = forgedID
		if op.Field == "phone" {
			op.Value = "2"
			op.Supersedes = []string{"phone/" + res.Op.String()}
		}
		fw.Ops = append(fw.Ops, op)
	}
	forged, err := encodeWrite(fw)
	if err != nil {
		t.Fatal(err)
	}
	forged = append(forged, w.Sig...)
	batch, _ = c.eng().Batch(ctx)
	if err := batch.Put(ctx, writeKey("contacts", eid, forgedID), forged); err != nil {
		t.Fatal(err)
	}
	if err := batch.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	expectEverywhere(t, tn, "contacts", "c1", "phone", "1", forgedID, ReasonBadSignature)
}

// TestTrustImportBatchSignature: the writes of one import delta carry one
// signature over all of them. A member replaying some of them in a delta of
// its own changes nothing (their honest block verified); a write forged
// with that signature is ignored everywhere.
func TestTrustImportBatchSignature(t *testing.T) {
	tn := newTrustNet(t, 3)
	a, c := tn.replicas[0], tn.replicas[2]
	ctx := context.Background()
	var recs []ImportRecord
	for i := range 10 {
		recs = append(recs, ImportRecord{Line: i + 1, ID: fmt.Sprintf("b%d", i), Fields: map[string]any{"last_name": "L", "phone": fmt.Sprint(i)}})
	}
	res, err := a.Import(ctx, "contacts", recs, nil)
	if err != nil || res.Deltas != 1 {
		t.Fatalf("import: %+v %v", res, err)
	}
	tn.waitConverged(10 * time.Second)
	var sig []byte
	var stored [][2]string // key, value
	if err := c.scan(ctx, collectionPrefix("contacts").String()+"/", func(kp keyParts, w *write) error {
		if !w.Batch || sig != nil && string(w.Sig) != string(sig) {
			t.Errorf("write %s: batch %v, signature shared %v", kp.Op, w.Batch, sig == nil || string(w.Sig) == string(sig))
		}
		sig = w.Sig
		v, err := c.eng().Get(ctx, writeKey("contacts", kp.EscapedID, kp.Op))
		if err != nil {
			return err
		}
		stored = append(stored, [2]string{writeKey("contacts", kp.EscapedID, kp.Op).String(), string(v)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(stored) != 10 {
		t.Fatalf("%d writes stored", len(stored))
	}
	// Replay three of them in C's own delta.
	b, _ := c.eng().Batch(ctx)
	for _, kv := range stored[:3] {
		if err := b.Put(ctx, dsKey(kv[0]), []byte(kv[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	for _, r := range tn.all() {
		if ig, _ := r.Ignored(ctx); len(ig) != 0 {
			t.Errorf("%s: a replay got writes ignored: %v", r.writer, ig)
		}
	}
	// A forged write carrying the batch's signature.
	kp, _ := parseOpKey(stored[0][0])
	forgedID := OpID{Time: kp.Op.Time + 1, Writer: kp.Op.Writer}
	fw := &write{ID: forgedID, Batch: true, Ops: []Op{{ID: forgedID, Field: "phone", Value: "forged", Supersedes: []string{"phone/" + kp.Op.String()}}}}
	forged, err := encodeWrite(fw)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = c.eng().Batch(ctx)
	if err := b.Put(ctx, writeKey("contacts", kp.EscapedID, forgedID), append(forged, sig...)); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	expectEverywhere(t, tn, "contacts", "b0", "phone", "0", forgedID, ReasonBadSignature)
}
