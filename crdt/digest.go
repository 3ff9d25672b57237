package crdt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Digest is an order-independent hash of the visible state of a store: the
// XOR of one hash per record (its collection, id, visible values, conflict
// candidates and record conflict). Two nodes with the same digest show the
// same records with the same conflicts. It is kept up to date incrementally:
// each merged operation marks its record, and only marked records are
// re-read when the digest is asked for.
type Digest [32]byte

// String renders the digest in hex.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

func (d *Digest) xor(o Digest) {
	for i := range d {
		d[i] ^= o[i]
	}
}

// DigestBuckets splits the digest by the first byte of each record's key
// hash, so two nodes can find which records differ without listing all.
type DigestBuckets [256]Digest

// Sum is the digest of the whole store.
func (b *DigestBuckets) Sum() Digest {
	var d Digest
	for _, x := range b {
		d.xor(x)
	}
	return d
}

// digestState is the incremental digest: per-record hashes and per-bucket
// XORs, rebuilt from scratch when the rules that decide visible values (the
// schema's policies, the nodes' roles) change.
type digestState struct {
	mu      sync.Mutex
	built   bool
	records map[string]Digest // "collection/escaped id" -> hash
	buckets DigestBuckets
	// ignored holds, by record, the visible operations that do not count.
	ignored map[string][]IgnoredOp

	dirtyMu sync.Mutex
	dirty   map[string][2]string // key -> collection, escaped id
	rebuild bool
}

// markDirty is called from go-ds-crdt's hooks: it must not block long.
func (d *digestState) markDirty(collection, escapedID string) {
	d.dirtyMu.Lock()
	if d.dirty == nil {
		d.dirty = map[string][2]string{}
	}
	if collection == SchemaCollection || collection == NodesCollection || collection == MembersCollection {
		d.rebuild = true // policies, roles or membership may have changed
	}
	d.dirty[collection+"/"+escapedID] = [2]string{collection, escapedID}
	d.dirtyMu.Unlock()
}

func bucketOf(key string) int {
	h := sha256.Sum256([]byte(key))
	return int(h[0])
}

// recordHash hashes what a record shows. absent=true means no record.
func recordHash(rec *Record, exists bool) (Digest, bool) {
	if rec == nil {
		return Digest{}, true
	}
	type field struct {
		Name       string
		Value      any
		Op         string
		Candidates []string
		Open       bool
	}
	canon := struct {
		Collection, ID string
		Exists         bool
		Fields         []field
		Conflict       []string
	}{Collection: rec.Collection, ID: rec.ID, Exists: exists}
	for _, name := range sortedFieldNames(rec) {
		f := rec.Fields[name]
		cf := field{Name: name, Value: f.Value, Op: f.Op.String(), Open: f.Open}
		for _, c := range f.Candidates {
			cf.Candidates = append(cf.Candidates, c.Op.String())
		}
		canon.Fields = append(canon.Fields, cf)
	}
	if c := rec.Conflict; c != nil {
		canon.Conflict = append(canon.Conflict, fmt.Sprintf("deleted=%t open=%t", c.Deleted, c.Open))
		for _, op := range append(append([]Op(nil), c.Deletes...), c.Edits...) {
			canon.Conflict = append(canon.Conflict, op.Field+"/"+op.ID.String())
		}
	}
	b, err := json.Marshal(canon)
	if err != nil {
		return Digest{}, true
	}
	return sha256.Sum256(b), false
}

func sortedFieldNames(rec *Record) []string {
	names := make([]string, 0, len(rec.Fields))
	for n := range rec.Fields {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// set replaces the hash of one record (absent removes it).
func (d *digestState) set(key string, h Digest, absent bool) {
	b := bucketOf(key)
	if old, ok := d.records[key]; ok {
		d.buckets[b].xor(old)
		delete(d.records, key)
	}
	if !absent {
		d.records[key] = h
		d.buckets[b].xor(h)
	}
}

// collections lists what the digest covers: every collection of the schema
// and the replicated system collections.
func (s *Store) digestCollections(ctx context.Context) ([]string, error) {
	sc, err := s.Schema(ctx)
	if err != nil {
		return nil, err
	}
	return append([]string{MembersCollection, NodesCollection, SchemaCollection, GrantsCollection, ChannelsCollection}, sc.Names()...), nil
}

// DigestBuckets returns the up-to-date digest, by bucket.
func (s *Store) DigestBuckets(ctx context.Context) (DigestBuckets, error) {
	d := &s.digest
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := s.refreshDigest(ctx); err != nil {
		return DigestBuckets{}, err
	}
	return d.buckets, nil
}

// TryDigest returns the up-to-date digest unless another caller is
// computing it (a first build scans the whole store): then ok is false.
func (s *Store) TryDigest(ctx context.Context) (d Digest, ok bool, err error) {
	if !s.digest.mu.TryLock() {
		return Digest{}, false, nil
	}
	defer s.digest.mu.Unlock()
	if err := s.refreshDigest(ctx); err != nil {
		return Digest{}, false, err
	}
	return s.digest.buckets.Sum(), true, nil
}

// Digest returns the up-to-date digest of the visible state.
func (s *Store) Digest(ctx context.Context) (Digest, error) {
	b, err := s.DigestBuckets(ctx)
	if err != nil {
		return Digest{}, err
	}
	return b.Sum(), nil
}

// RecordHashes returns the hash of every record in the given buckets, keyed
// "collection/escaped id".
func (s *Store) RecordHashes(ctx context.Context, buckets []int) (map[string]Digest, error) {
	d := &s.digest
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := s.refreshDigest(ctx); err != nil {
		return nil, err
	}
	want := map[int]bool{}
	for _, b := range buckets {
		want[b] = true
	}
	out := map[string]Digest{}
	for k, h := range d.records {
		if want[bucketOf(k)] {
			out[k] = h
		}
	}
	return out, nil
}

// refreshDigest brings the digest up to date. The caller holds d.mu.
func (s *Store) refreshDigest(ctx context.Context) error {
	d := &s.digest
	d.dirtyMu.Lock()
	dirty, rebuild := d.dirty, d.rebuild
	d.dirty, d.rebuild = nil, false
	d.dirtyMu.Unlock()
	if !d.built || rebuild {
		d.records, d.buckets, d.ignored = map[string]Digest{}, DigestBuckets{}, map[string][]IgnoredOp{}
		colls, err := s.digestCollections(ctx)
		if err != nil {
			return s.digestFailed(err, dirty, rebuild)
		}
		for _, coll := range colls {
			ru, err := s.rulesFor(ctx, coll)
			if err != nil {
				return s.digestFailed(err, dirty, true)
			}
			err = s.scanRecords(ctx, coll, func(ops *recordOps) error {
				s.digestRecord(coll, ops, ru)
				return nil
			})
			if err != nil {
				return s.digestFailed(fmt.Errorf("digest of %s: %w", coll, err), dirty, true)
			}
		}
		d.built = true
		return nil
	}
	if len(dirty) == 0 {
		return nil
	}
	colls, err := s.digestCollections(ctx)
	if err != nil {
		return s.digestFailed(err, dirty, false)
	}
	for key, ce := range dirty {
		if !slices.Contains(colls, ce[0]) {
			// Not covered (epoch manifests, lost-block notes): a build
			// leaves them out, so must a change, or two nodes with the
			// same records would differ by how they got them.
			d.set(key, Digest{}, true)
			continue
		}
		ru, err := s.rulesFor(ctx, ce[0])
		if err != nil {
			return s.digestFailed(err, dirty, false)
		}
		ops, err := s.readRecord(ctx, ce[0], ce[1])
		if err != nil {
			return s.digestFailed(err, dirty, false)
		}
		s.digestRecord(ce[0], ops, ru)
	}
	return nil
}

// digestRecord updates the digest and the ignored operations of one record.
// The caller holds d.mu.
func (s *Store) digestRecord(collection string, ops *recordOps, ru rules) {
	d := &s.digest
	key := collection + "/" + ops.escapedID
	if len(ops.ignored) > 0 {
		d.ignored[key] = ops.ignored
	} else {
		delete(d.ignored, key)
	}
	id, err := UnescapeID(ops.escapedID)
	if err != nil {
		return
	}
	rec, exists := ops.fold(collection, id, ru)
	h, absent := recordHash(rec, exists)
	d.set(key, h, absent)
}

// Ignored lists the operations this node does not show because they failed
// a check of the trust model (bad signature, writer not a member or revoked
// before writing, role not allowed), by collection, record and field.
func (s *Store) Ignored(ctx context.Context) ([]IgnoredOp, error) {
	d := &s.digest
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := s.refreshDigest(ctx); err != nil {
		return nil, err
	}
	var out []IgnoredOp
	for _, ops := range d.ignored {
		out = append(out, ops...)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Collection != b.Collection {
			return a.Collection < b.Collection
		}
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		if a.Field != b.Field {
			return a.Field < b.Field
		}
		return b.Op.Newer(a.Op)
	})
	return out, nil
}

// digestFailed puts the marks back so that the next call retries.
func (s *Store) digestFailed(err error, dirty map[string][2]string, rebuild bool) error {
	d := &s.digest
	d.dirtyMu.Lock()
	if d.dirty == nil {
		d.dirty = map[string][2]string{}
	}
	for k, v := range dirty {
		d.dirty[k] = v
	}
	d.rebuild = d.rebuild || rebuild
	d.dirtyMu.Unlock()
	return err
}

// RecordCount returns how many records of user collections the store
// shows, from its digest, brought up to date with the records changed
// since (a channel nobody else holds is not asked for its digest, and its
// count once stayed as it was before a move); ok is false while the
// digest is not built yet, or could not be brought up to date.
func (s *Store) RecordCount(ctx context.Context) (n int, ok bool) {
	d := &s.digest
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.built {
		return 0, false
	}
	if err := s.refreshDigest(ctx); err != nil {
		return 0, false
	}
	for k := range d.records {
		if !strings.HasPrefix(k, "_") {
			n++
		}
	}
	return n, true
}
