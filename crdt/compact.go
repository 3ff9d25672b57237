package crdt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dscrdt "github.com/ipfs/go-ds-crdt"
	pb "github.com/ipfs/go-ds-crdt/pb"
)

// Errors of compaction and epochs.
var (
	// ErrBusy: the store is still merging what peers sent (or needs a
	// repair): a compaction now would not know what it holds.
	ErrBusy = errors.New("the store is still syncing")
	// ErrStaleEpoch: the epoch offered is not later than this node's.
	ErrStaleEpoch = errors.New("not a later epoch")
	// ErrBadEpoch: an epoch's manifest is missing, does not match its id,
	// or was not written by an office.
	ErrBadEpoch = errors.New("invalid epoch")
)

// buildRoot holds one key per epoch being built here (the value is its
// namespace): a build cut short (a kill) is cleared at the next start.
const buildRoot = "/ferry/epoch/build"

// EpochReport says what moving to a new epoch did.
type EpochReport struct {
	Epoch Epoch
	Prev  Epoch
	// Seeded: writes and records the new epoch starts with (compaction).
	Seeded  int
	Records int
	// Vouched: seeded writes of import batches this office signed for
	// (each seeded apart from its batch).
	Vouched int
	// Carried: writes of the old epoch the cut did not cover, carried
	// over; Facts: records given a write listing what those superseded.
	Carried int
	Facts   int
	// Archived: records whose recent superseded values were kept (see
	// Options.HistoryKeep).
	Archived int
	// Dropped: the old epoch's keys and blocks removed.
	DroppedKeys   int
	DroppedBlocks int
	Took          time.Duration
}

// Compact starts a new epoch from this node's visible state (see
// epoch.go). Only an office compacts a network with a trust model. It
// fails with ErrBusy while blocks peers sent are still being merged.
func (s *Store) Compact(ctx context.Context) (*EpochReport, error) {
	start := time.Now()
	if s.opts.Trust != nil {
		roles, err := s.roles(ctx)
		if err != nil {
			return nil, fmt.Errorf("compact: %w", err)
		}
		if roles[s.opts.Writer] != RoleOffice {
			return nil, fmt.Errorf("compact: only an office starts an epoch: %w", ErrForbidden)
		}
	}
	if st := s.Stats(ctx); st.Dirty {
		return nil, fmt.Errorf("compact: %w (a repair is pending)", ErrBusy)
	}
	cut, err := s.cutVector(ctx)
	if err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	// What the current epoch's cut covers is known here too, through its
	// seed, though the seed holds only the writes that were visible: the
	// new cut covers it as well (else a write the office knew dead, newer
	// than anything the seed shows of its writer, would be carried into
	// the new epoch by a node that was away, and show again).
	if prev := s.EpochInfo(); prev != nil {
		for w, ts := range prev.Cut {
			if t, err := ParseTimestamp(ts); err == nil && t > cut[w] {
				cut[w] = t
			}
		}
	}
	cur := s.Epoch()
	info := &EpochInfo{Number: cur.Number + 1, Prev: cur.String(), By: s.opts.Writer,
		At: s.opts.Now().UTC().Truncate(time.Millisecond), Cut: map[string]string{}, Keep: s.opts.HistoryKeep}
	for w, t := range cut {
		info.Cut[w] = t.String()
	}
	if err := sealEpochInfo(info); err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	rep := &EpochReport{Epoch: info.Epoch, Prev: cur}
	if err := s.markBuilding(ctx, info.Epoch); err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	side, _, err := s.openSide(ctx, info.Epoch, false)
	if err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	err = s.seed(ctx, side, rep)
	if err == nil {
		err = side.writeManifest(ctx, info)
	}
	if cerr := side.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("compact: seed epoch %s: %w", info.Epoch, err)
	}
	if err := s.switchEpoch(ctx, info, rep); err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	rep.Took = time.Since(start)
	return rep, nil
}

// cutVector walks the DAG from its heads and returns, per writer, the
// newest op of the blocks it reaches. Every block must be here and merged:
// the set is then closed under links, so it holds every op of each writer
// up to that time (see epoch.go). It keeps only the set of blocks seen.
func (s *Store) cutVector(ctx context.Context) (map[string]Timestamp, error) {
	heads := s.eng().InternalStats(ctx).Heads
	processed := s.layout().processed()
	seen := make(map[string]struct{}, 1024)
	stack := slices.Clone(heads)
	cut := map[string]Timestamp{}
	missing, unmerged := 0, 0
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		k := blockKey(c)
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		if !s.hasBlock(ctx, k) {
			missing++
			continue
		}
		if ok, err := s.base.Has(ctx, processed.ChildString(k)); err != nil {
			return nil, err
		} else if !ok {
			unmerged++
		}
		nd, err := s.dag.Get(ctx, c)
		if err != nil {
			missing++
			continue
		}
		for _, l := range nd.Links() {
			stack = append(stack, l.Cid)
		}
		delta, err := decodeDelta(nd)
		if err != nil {
			return nil, err
		}
		for _, e := range delta.GetElements() {
			kp, err := parseOpKey(e.GetKey())
			if err != nil {
				continue
			}
			if kp.Op.Time > cut[kp.Op.Writer] {
				cut[kp.Op.Writer] = kp.Op.Time
			}
		}
	}
	if missing > 0 || unmerged > 0 {
		return nil, fmt.Errorf("%w: %d blocks missing, %d not merged yet; try again once synced", ErrBusy, missing, unmerged)
	}
	return cut, nil
}

// seed puts every write the current epoch shows, as stored, into the new
// epoch's store, in deltas of BatchOps writes:
//   - the writes go-ds-crdt shows, except those that only carry supersede
//     facts (KeepField alone): everything they name is known to the cut,
//     and the cut's hidden ops are not seeded;
//   - with a trust model, the writes shown only because what tombstoned
//     them does not count (a forged edit);
//   - the writes of an import batch (signed once for the whole batch, see
//     signBatch) are seeded in one delta with every other write of their
//     batch, as the batch's signature needs, and those of them that do not
//     show are tombstoned in a later delta.
func (s *Store) seed(ctx context.Context, side *Store, rep *EpochReport) error {
	side.writeMu.Lock()
	defer side.writeMu.Unlock()
	sd := &seeder{s: s, side: side, rep: rep, groups: map[string]string{}, shown: map[string]bool{}}
	defer sd.end(ctx)
	res, err := s.eng().Query(ctx, query.Query{Prefix: "/"})
	if err != nil {
		return fmt.Errorf("read visible writes: %w", err)
	}
	for r := range res.Next() {
		if r.Error != nil {
			res.Close()
			return r.Error
		}
		kp, err := parseOpKey(r.Key)
		if err != nil {
			continue
		}
		w, err := decodeWrite(kp, r.Value)
		if err == nil && onlyKeeps(w) {
			continue
		}
		sd.shown[r.Key] = true
		if rec := kp.Collection + "/" + kp.EscapedID; rec != sd.last {
			rep.Records++ // keys come sorted: a record's writes are adjacent
			sd.last = rec
		}
		if err := sd.add(ctx, r.Key, kp, w, r.Value); err != nil {
			res.Close()
			return err
		}
	}
	res.Close()
	if err := sd.revive(ctx); err != nil {
		return err
	}
	return sd.finish(ctx)
}

// seeder puts the seed into the new epoch's store.
type seeder struct {
	s, side *Store
	rep     *EpochReport
	b       *pendingDelta
	n, size int
	last    string // the last record seeded
	// groups: the import batches to seed whole (writer + signature -> a
	// key of theirs); shown: the write keys that show.
	groups map[string]string
	shown  map[string]bool
}

func (sd *seeder) flush(ctx context.Context) error {
	if sd.b == nil {
		return nil
	}
	err := sd.side.commit(ctx, sd.b)
	sd.b.end(ctx)
	sd.b, sd.n, sd.size = nil, 0, 0
	return err
}

func (sd *seeder) end(ctx context.Context) {
	if sd.b != nil {
		sd.b.end(ctx)
		sd.b = nil
	}
}

// put stages one write, committing the delta when it is full.
func (sd *seeder) put(ctx context.Context, key string, value []byte) error {
	if sd.n >= sd.s.opts.BatchOps || sd.size+len(key)+len(value) > sd.s.opts.BatchBytes {
		if err := sd.flush(ctx); err != nil {
			return err
		}
	}
	if sd.b == nil {
		b, err := sd.side.openBatch(ctx)
		if err != nil {
			return err
		}
		sd.b = b
	}
	if err := sd.b.Put(ctx, ds.RawKey(key), value); err != nil {
		return err
	}
	if err := sd.side.copyBadSig(ctx, sd.s, key); err != nil {
		return err
	}
	sd.n++
	sd.size += len(key) + len(value)
	sd.rep.Seeded++
	return nil
}

// add seeds one write that shows. A write signed with its import batch
// is vouched for by this office (Store.vouch): seeded alone, its batch's
// signature would not verify. Without a trust model (no signatures), its
// batch is noted, to be seeded whole.
func (sd *seeder) add(ctx context.Context, key string, kp keyParts, w *write, value []byte) error {
	if w != nil && w.Batch && len(w.Sig) > 0 && sd.s.opts.Trust != nil && !sd.s.isBadSig(key) {
		v, err := sd.s.vouch(key, w)
		if err != nil {
			return err
		}
		sd.rep.Vouched++
		return sd.put(ctx, key, v)
	}
	if w != nil && w.Batch && len(w.Sig) > 0 {
		id := kp.Op.Writer + "\n" + string(w.Sig)
		if _, ok := sd.groups[id]; !ok {
			sd.groups[id] = key
		}
		return nil
	}
	return sd.put(ctx, key, value)
}

// revive seeds, for the records with ops that do not count, the writes
// shown only because what tombstoned them does not count.
func (sd *seeder) revive(ctx context.Context) error {
	s := sd.s
	if s.opts.Trust == nil {
		return nil
	}
	ignored, err := s.Ignored(ctx)
	if err != nil {
		return fmt.Errorf("list ignored ops: %w", err)
	}
	done := map[string]bool{}
	for _, ig := range ignored {
		eid, err := EscapeID(ig.ID)
		if err != nil || done[ig.Collection+"/"+eid] {
			continue
		}
		done[ig.Collection+"/"+eid] = true
		rec, err := s.readRecord(ctx, ig.Collection, eid)
		if err != nil {
			return err
		}
		show := map[string]bool{}
		for _, ops := range rec.fields {
			for _, op := range ops {
				show[op.Ref()] = true
			}
		}
		for _, op := range rec.deletes {
			show[op.Ref()] = true
		}
		elems, deltas, err := s.recordElementsWithDeltas(ctx, ig.Collection, eid, "")
		if err != nil {
			return err
		}
		for _, e := range elems {
			if e.live || !e.decoded || sd.shown[e.key] || !show[e.Field+"/"+e.Op.String()] {
				continue
			}
			value := elementValue(deltas[e.blockKey], e.key)
			if value == nil {
				continue
			}
			kp, _ := parseOpKey(e.key)
			w, err := decodeWrite(kp, value)
			if err != nil {
				continue
			}
			sd.shown[e.key] = true
			if err := sd.add(ctx, e.key, kp, w, value); err != nil {
				return err
			}
		}
	}
	return nil
}

// finish seeds the import batches, each whole in its own delta, then
// tombstones the writes of them that do not show.
func (sd *seeder) finish(ctx context.Context) error {
	if err := sd.flush(ctx); err != nil {
		return err
	}
	var hidden []ds.Key
	cache := map[string]*pb.Delta{}
	for id, key := range sd.groups {
		members, err := sd.s.batchGroup(ctx, key, id, cache)
		if err != nil {
			return err
		}
		for _, m := range members {
			if err := sd.put(ctx, m[0], []byte(m[1])); err != nil {
				return err
			}
			if !sd.shown[m[0]] {
				hidden = append(hidden, ds.RawKey(m[0]))
				sd.rep.Seeded--
			}
		}
		if err := sd.flush(ctx); err != nil {
			return err
		}
		if len(cache) > 64 {
			clear(cache)
		}
	}
	for len(hidden) > 0 {
		n := min(len(hidden), sd.s.opts.BatchOps)
		b, err := sd.side.openBatch(ctx)
		if err != nil {
			return err
		}
		for _, k := range hidden[:n] {
			if err := b.Delete(ctx, k); err != nil {
				b.end(ctx)
				return err
			}
		}
		err = sd.side.commit(ctx, b)
		b.end(ctx)
		if err != nil {
			return err
		}
		hidden = hidden[n:]
	}
	return nil
}

// batchGroup returns every write (key, stored value) of the import batch
// id (writer + "\n" + signature) that key's write belongs to, from the
// block that carried it.
func (s *Store) batchGroup(ctx context.Context, key, id string, cache map[string]*pb.Delta) ([][2]string, error) {
	p := prefix(s.layout().elems().Child(ds.RawKey(key)))
	res, err := s.base.Query(ctx, query.Query{Prefix: p, KeysOnly: true})
	if err != nil {
		return nil, err
	}
	entries, err := res.Rest()
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		delta, _, err := s.blockDelta(ctx, strings.TrimPrefix(e.Key, p), cache)
		if err != nil {
			continue
		}
		var out [][2]string
		for _, el := range delta.GetElements() {
			kp, err := parseOpKey(el.GetKey())
			if err != nil {
				continue
			}
			w, err := decodeWrite(kp, el.GetValue())
			if err != nil || !w.Batch || kp.Op.Writer+"\n"+string(w.Sig) != id {
				continue
			}
			out = append(out, [2]string{el.GetKey(), string(el.GetValue())})
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, fmt.Errorf("the import batch of %s is not here", key)
}

// elementValue is the stored value of key in a delta (nil if absent).
func elementValue(d *pb.Delta, key string) []byte {
	if d == nil {
		return nil
	}
	for _, el := range d.GetElements() {
		if el.GetKey() == key {
			return el.GetValue()
		}
	}
	return nil
}

// onlyKeeps reports whether a write only lists superseded ops.
func onlyKeeps(w *write) bool {
	for _, op := range w.Ops {
		if op.Field != KeepField {
			return false
		}
	}
	return len(w.Ops) > 0
}

// copyBadSig marks key in this (side) store when its signature failed in
// from: a write copied as stored is not verified again here.
func (s *Store) copyBadSig(ctx context.Context, from *Store, key string) error {
	if from.opts.Trust == nil || !from.isBadSig(key) {
		return nil
	}
	s.badSig.Store(key, true)
	return s.base.Put(ctx, ds.RawKey(s.badSigRoot()+key), nil)
}

// writeManifest writes the epoch's manifest record, in its own delta.
func (s *Store) writeManifest(ctx context.Context, info *EpochInfo) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	eid, err := EscapeID(info.Epoch.String())
	if err != nil {
		return err
	}
	id := OpID{Time: s.clock.Now(), Writer: s.opts.Writer}
	return s.putWrite(ctx, EpochsCollection, eid, &write{ID: id, Ops: []Op{{ID: id, Field: epochInfoField, Value: info.raw}}})
}

// putWrite signs one write and commits it in its own delta. The caller
// holds writeMu.
func (s *Store) putWrite(ctx context.Context, collection, eid string, w *write) error {
	unsigned, err := encodeWrite(w)
	if err != nil {
		return err
	}
	key := writeKey(collection, eid, w.ID)
	values, err := s.signWrite([]ds.Key{key}, [][]byte{unsigned})
	if err != nil {
		return err
	}
	b, err := s.openBatch(ctx)
	if err != nil {
		return err
	}
	defer b.end(ctx)
	if err := b.Put(ctx, key, values[0]); err != nil {
		return err
	}
	return s.commit(ctx, b)
}

// readManifest reads and checks the manifest of epoch ep from this
// (side) store: it must hash to ep's id and, with a trust model, be
// written by an office with a good signature.
func (s *Store) readManifest(ctx context.Context, ep Epoch) (*EpochInfo, error) {
	eid, err := EscapeID(ep.String())
	if err != nil {
		return nil, err
	}
	var found *EpochInfo
	err = s.scan(ctx, recordPrefix(EpochsCollection, eid).String()+"/", func(kp keyParts, w *write) error {
		for _, op := range w.Ops {
			raw, ok := op.Value.(string)
			if op.Field != epochInfoField || !ok {
				continue
			}
			info, err := parseEpochInfo(raw)
			if err != nil || info.Epoch != ep || info.By != op.ID.Writer {
				continue
			}
			if s.opts.Trust != nil {
				v, err := s.view(ctx)
				if err != nil {
					return err
				}
				if v.badSig(writeKey(EpochsCollection, eid, kp.Op).String()) || v.check(EpochsCollection, eid, nil, op) != "" {
					continue
				}
			}
			found = info
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, fmt.Errorf("%w: epoch %s has no valid manifest", ErrBadEpoch, ep)
	}
	return found, nil
}

// Epochs lists the manifests of the epochs this node's history went
// through (the current one last).
func (s *Store) Epochs(ctx context.Context) ([]EpochInfo, error) {
	var out []EpochInfo
	err := s.scan(ctx, collectionPrefix(EpochsCollection).String()+"/", func(kp keyParts, w *write) error {
		for _, op := range w.Ops {
			if raw, ok := op.Value.(string); ok && op.Field == epochInfoField {
				if info, err := parseEpochInfo(raw); err == nil && info.By == op.ID.Writer {
					out = append(out, *info)
				}
			}
		}
		return nil
	})
	slices.SortFunc(out, func(a, b EpochInfo) int {
		if a.Epoch.After(b.Epoch) {
			return 1
		}
		if b.Epoch.After(a.Epoch) {
			return -1
		}
		return 0
	})
	return out, err
}

// Adopt moves this node to epoch ep, whose DAG has heads: it merges that
// DAG into a store of its own namespace (blocks are fetched through the
// DAG service), checks its manifest, carries over what the cut does not
// cover and drops the old epoch. It returns ErrStaleEpoch when ep is not
// later than this node's epoch.
func (s *Store) Adopt(ctx context.Context, ep Epoch, heads []cid.Cid) (*EpochReport, error) {
	start := time.Now()
	if !ep.After(s.Epoch()) {
		return nil, ErrStaleEpoch
	}
	if err := s.markBuilding(ctx, ep); err != nil {
		return nil, fmt.Errorf("adopt epoch %s: %w", ep, err)
	}
	side, feed, err := s.openSide(ctx, ep, true)
	if err != nil {
		return nil, fmt.Errorf("adopt epoch %s: %w", ep, err)
	}
	payload, err := EncodeHeads(heads, ep)
	if err == nil {
		feed.give(payload)
		err = side.waitMerged(ctx, heads)
	}
	var info *EpochInfo
	if err == nil {
		info, err = side.readManifest(ctx, ep)
	}
	if cerr := side.Close(); err == nil && cerr != nil {
		err = cerr
	}
	feed.close()
	if err != nil {
		// What was merged of it goes (it is fetched again if offered
		// again); its blocks stay until they are dropped with an epoch.
		if _, cerr := s.countAndClear(ctx, prefix(ep.namespace(s.opts.Namespace))); cerr == nil {
			_ = s.base.Delete(ctx, ds.NewKey(buildRoot).ChildString(ep.String()))
		}
		return nil, fmt.Errorf("adopt epoch %s: %w", ep, err)
	}
	rep := &EpochReport{Epoch: ep, Prev: s.Epoch()}
	if err := s.switchEpoch(ctx, info, rep); err != nil {
		return nil, fmt.Errorf("adopt epoch %s: %w", ep, err)
	}
	rep.Took = time.Since(start)
	return rep, nil
}

// waitMerged waits until this store has merged every block below heads.
func (s *Store) waitMerged(ctx context.Context, heads []cid.Cid) error {
	delay := 10 * time.Millisecond
	for {
		done, err := s.merged(ctx, heads)
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("merge the epoch's DAG: %w", ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

func (s *Store) merged(ctx context.Context, heads []cid.Cid) (bool, error) {
	for _, h := range heads {
		if ok, err := s.Processed(ctx, h); err != nil || !ok {
			return false, err
		}
	}
	if s.Stats(ctx).QueuedJobs > 0 {
		return false, nil
	}
	d, err := s.scanDAG(ctx)
	if err != nil {
		return false, err
	}
	return len(d.missing) == 0 && len(d.unmerged) == 0, nil
}

// markBuilding notes that epoch ep's namespace is being built here.
func (s *Store) markBuilding(ctx context.Context, ep Epoch) error {
	ns := ep.namespace(s.opts.Namespace)
	return s.base.Put(ctx, ds.NewKey(buildRoot).ChildString(ep.String()), []byte(ns.String()))
}

// switchEpoch moves the store to the epoch of info, whose namespace holds
// its DAG: go-ds-crdt stops merging into the old epoch (it is opened again
// without a broadcaster, to be read), what the cut does not cover is
// carried over, recent history is archived, then one write makes the new
// epoch current and go-ds-crdt opens there. The old epoch is dropped
// last. A kill before the switch leaves the old epoch as it was (the new
// namespace is cleared at the next start); after it, the drop resumes.
func (s *Store) switchEpoch(ctx context.Context, info *EpochInfo, rep *EpochReport) error {
	s.writeMu.Lock()
	locked := true
	defer func() {
		if locked {
			s.writeMu.Unlock()
		}
	}()
	if !info.Epoch.After(s.Epoch()) {
		return ErrStaleEpoch
	}
	oldNs, oldEpoch := s.namespace(), s.Epoch()
	// Readers keep reading: the old epoch is opened again without a
	// broadcaster (nothing merges into it any more) before the running
	// engine is swapped out and closed.
	quiet, err := s.openEngineWith(nil)
	if err != nil {
		return fmt.Errorf("open the old epoch to read: %w", err)
	}
	if err := s.engine.Swap(quiet).Close(); err != nil {
		s.log.Warn("closing go-ds-crdt to change epoch", "err", err)
	}
	side, _, err := s.openSide(ctx, info.Epoch, false)
	if err != nil {
		return s.reopenAfter(err)
	}
	err = s.carry(ctx, side, info, rep)
	if err == nil && s.opts.HistoryKeep > 0 {
		err = s.archiveHistory(ctx, rep)
	}
	if cerr := side.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return s.reopenAfter(err)
	}
	// The switch: one batch.
	b, err := s.base.Batch(ctx)
	if err == nil {
		_ = b.Put(ctx, epochKey, []byte(info.raw))
		_ = b.Put(ctx, ds.NewKey(dropRoot).ChildString(oldEpoch.String()), []byte(oldNs.String()))
		_ = b.Delete(ctx, ds.NewKey(buildRoot).ChildString(info.Epoch.String()))
		err = b.Commit(ctx)
	}
	if err != nil {
		return s.reopenAfter(fmt.Errorf("make epoch %s current: %w", info.Epoch, err))
	}
	s.setEpoch(info)
	s.observed = s.newObserved()
	eng, err := s.openEngine()
	if err != nil {
		s.health.fail(fmt.Sprintf("opening epoch %s failed (%v)", info.Epoch, err), false)
		return fmt.Errorf("open epoch %s: %w", info.Epoch, err)
	}
	if err := s.engine.Swap(eng).Close(); err != nil {
		s.log.Warn("closing the old epoch", "err", err)
	}
	s.afterEpochChange(ctx)
	s.writeMu.Unlock()
	locked = false

	if s.bcast != nil {
		if payload, err := EncodeHeads(eng.InternalStats(ctx).Heads, info.Epoch); err == nil {
			s.bcast.send(ctx, payload)
		}
	}
	s.log.Info("moved to a new epoch", "epoch", info.Epoch, "from", oldEpoch, "carried", rep.Carried)
	keys, blocks, err := s.dropEpoch(ctx, oldEpoch.String(), oldNs)
	rep.DroppedKeys, rep.DroppedBlocks = keys, blocks
	if err != nil {
		s.log.Warn("dropping the old epoch did not finish; tried again at the next start", "epoch", oldEpoch, "err", err)
	}
	if s.opts.OnEpoch != nil {
		s.opts.OnEpoch(*rep)
	}
	return nil
}

// reopenAfter opens go-ds-crdt again in the current (old) epoch after a
// switch failed, and returns err. The caller holds writeMu.
func (s *Store) reopenAfter(err error) error {
	_ = s.eng().Close()
	eng, oerr := s.openEngine()
	if oerr != nil {
		s.health.fail(fmt.Sprintf("reopening the store after a failed epoch change failed (%v)", oerr), false)
		return errors.Join(err, oerr)
	}
	s.engine.Store(eng)
	return err
}

// afterEpochChange drops what was cached of the old epoch. The caller
// holds writeMu.
func (s *Store) afterEpochChange(ctx context.Context) {
	s.schemaStale.Store(true)
	s.rolesStale.Store(true)
	s.membersStale.Store(true)
	s.badSig.Clear()
	if s.opts.Trust != nil {
		if err := s.loadBadSigs(ctx); err != nil {
			s.log.Warn("reading signature marks of the new epoch", "err", err)
		}
	}
	s.digest.dirtyMu.Lock()
	s.digest.rebuild = true
	s.digest.dirtyMu.Unlock()
	s.unique.invalidate()
}

// setEpoch makes info (nil: the first epoch) the current epoch.
func (s *Store) setEpoch(info *EpochInfo) {
	ns := s.opts.Namespace
	if info != nil {
		ns = info.Epoch.namespace(s.opts.Namespace)
	}
	s.ns.Store(&ns)
	s.epochInfo.Store(info)
}

// openSide opens a store over epoch ep's namespace, sharing this store's
// datastore, DAG service, clock and keys, announcing nothing. With feed,
// heads handed to the returned feed are merged.
func (s *Store) openSide(ctx context.Context, ep Epoch, feed bool) (*Store, *feedBroadcaster, error) {
	o := s.opts
	o.Namespace = ep.namespace(s.opts.Namespace)
	o.Recover, o.OnChange, o.OnEpoch = false, nil, nil
	o.RebroadcastInterval = time.Hour
	o.Logger = s.log.With("epoch", ep.String())
	o.side = &ep
	var bc dscrdt.Broadcaster
	var fb *feedBroadcaster
	if feed {
		fb = newFeedBroadcaster()
		bc = fb
	}
	side, err := New(ctx, s.base, s.dag, bc, o)
	if err != nil {
		return nil, nil, fmt.Errorf("open epoch %s: %w", ep, err)
	}
	side.clock = s.clock
	if side.bcast != nil {
		side.bcast.quiet.Store(true)
	}
	return side, fb, nil
}

// feedBroadcaster hands go-ds-crdt the heads given to it, and sends
// nothing.
type feedBroadcaster struct {
	ch   chan []byte
	done chan struct{}
}

func newFeedBroadcaster() *feedBroadcaster {
	return &feedBroadcaster{ch: make(chan []byte, 4), done: make(chan struct{})}
}

func (f *feedBroadcaster) give(data []byte) {
	select {
	case f.ch <- data:
	case <-f.done:
	}
}

func (f *feedBroadcaster) close() {
	select {
	case <-f.done:
	default:
		close(f.done)
	}
}

func (f *feedBroadcaster) Broadcast(context.Context, []byte) error { return nil }

func (f *feedBroadcaster) Next(ctx context.Context) ([]byte, error) {
	select {
	case d := <-f.ch:
		return d, nil
	case <-f.done:
		return nil, dscrdt.ErrNoMoreBroadcast
	case <-ctx.Done():
		return nil, dscrdt.ErrNoMoreBroadcast
	}
}

// resumeDrops finishes dropping old epochs and clears epochs whose build
// was cut short (at start, before anything else uses the store).
func (s *Store) resumeDrops(ctx context.Context) error {
	var errs []error
	for _, root := range []string{buildRoot, dropRoot} {
		res, err := s.base.Query(ctx, query.Query{Prefix: root + "/"})
		if err != nil {
			return err
		}
		entries, err := res.Rest()
		if err != nil {
			return err
		}
		for _, e := range entries {
			ns := ds.RawKey(string(e.Value))
			if ns == s.namespace() || !strings.HasPrefix(ns.String(), s.opts.Namespace.String()) {
				// The current epoch (a build that became current), or not
				// ours: only the marker goes.
				if err := s.base.Delete(ctx, ds.RawKey(e.Key)); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			if _, _, err := s.dropEpoch(ctx, strings.TrimPrefix(e.Key, root+"/"), ns); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := s.base.Delete(ctx, ds.RawKey(e.Key)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// dropEpoch removes an old epoch: the blocks it merged (unless the current
// epoch merged them too), then every key of its namespace, then its drop
// marker. It can be run again after a kill.
func (s *Store) dropEpoch(ctx context.Context, name string, ns ds.Key) (keys, blocks int, err error) {
	if ns == s.namespace() {
		return 0, 0, errors.New("drop epoch: it is the current one")
	}
	old := layout{ns: ns}
	processedRoot := prefix(old.processed())
	cur := s.layout().processed()
	res, err := s.base.Query(ctx, query.Query{Prefix: processedRoot, KeysOnly: true})
	if err != nil {
		return 0, 0, fmt.Errorf("drop epoch %s: %w", name, err)
	}
	entries, err := res.Rest()
	if err != nil {
		return 0, 0, fmt.Errorf("drop epoch %s: %w", name, err)
	}
	for _, e := range entries {
		k := strings.TrimPrefix(e.Key, processedRoot)
		if ok, err := s.base.Has(ctx, cur.ChildString(k)); err != nil || ok {
			continue
		}
		c, err := blockCid(k)
		if err != nil {
			continue
		}
		if err := s.dag.Remove(ctx, c); err == nil {
			blocks++
		}
	}
	if s.opts.DropPrefix != nil {
		if keys, err = s.countKeys(ctx, prefix(ns)); err == nil {
			err = s.opts.DropPrefix(ctx, prefix(ns))
		}
	}
	if err == nil {
		// What DropPrefix left (badger v1.6.2 can leave a key the
		// memtable held), or everything without it.
		var n int
		n, err = s.countAndClear(ctx, prefix(ns))
		if n > 0 && s.opts.DropPrefix != nil {
			s.log.Info("keys left after dropping an old epoch's prefix, deleted", "keys", n)
		}
		if s.opts.DropPrefix == nil {
			keys = n
		}
	}
	if err != nil {
		return keys, blocks, fmt.Errorf("drop epoch %s: %w", name, err)
	}
	if err := s.base.Delete(ctx, ds.NewKey(dropRoot).ChildString(name)); err != nil {
		return keys, blocks, fmt.Errorf("drop epoch %s: %w", name, err)
	}
	return keys, blocks, nil
}

// countKeys counts the keys under p.
func (s *Store) countKeys(ctx context.Context, p string) (int, error) {
	res, err := s.base.Query(ctx, query.Query{Prefix: p, KeysOnly: true})
	if err != nil {
		return 0, err
	}
	defer res.Close()
	n := 0
	for r := range res.Next() {
		if r.Error != nil {
			return n, r.Error
		}
		n++
	}
	return n, nil
}

// countAndClear deletes every key under p and returns how many.
func (s *Store) countAndClear(ctx context.Context, p string) (int, error) {
	n := 0
	for {
		res, err := s.base.Query(ctx, query.Query{Prefix: p, KeysOnly: true, Limit: 10000})
		if err != nil {
			return n, err
		}
		entries, err := res.Rest()
		if err != nil {
			return n, err
		}
		if len(entries) == 0 {
			return n, nil
		}
		b, err := s.base.Batch(ctx)
		if err != nil {
			return n, err
		}
		for _, e := range entries {
			if err := b.Delete(ctx, ds.RawKey(e.Key)); err != nil {
				return n, err
			}
		}
		if err := b.Commit(ctx); err != nil {
			return n, err
		}
		n += len(entries)
	}
}

// HistorySize is how much history the current epoch holds.
type HistorySize struct {
	// Writes: every write merged in this epoch (each element go-ds-crdt
	// keeps), Visible: those still shown.
	Writes, Visible int
}

// Ratio is Writes over Visible (1 for a fresh epoch, 0 for an empty one).
func (h HistorySize) Ratio() float64 {
	if h.Visible == 0 {
		return 0
	}
	return float64(h.Writes) / float64(h.Visible)
}

// HistorySize counts the current epoch's writes (a keys-only scan).
func (s *Store) HistorySize(ctx context.Context) (HistorySize, error) {
	var h HistorySize
	count := func(p string, suffix string) (int, error) {
		res, err := s.base.Query(ctx, query.Query{Prefix: p, KeysOnly: true})
		if err != nil {
			return 0, err
		}
		defer res.Close()
		n := 0
		for r := range res.Next() {
			if r.Error != nil {
				return n, r.Error
			}
			if strings.HasSuffix(r.Key, suffix) {
				n++
			}
		}
		return n, nil
	}
	var err error
	l := s.layout()
	if h.Writes, err = count(prefix(l.elems()), ""); err != nil {
		return h, fmt.Errorf("history size: %w", err)
	}
	if h.Visible, err = count(prefix(l.values()), "/v"); err != nil {
		return h, fmt.Errorf("history size: %w", err)
	}
	return h, nil
}
