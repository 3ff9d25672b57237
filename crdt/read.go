package crdt

// Reading records: one record's operations (readRecord), a collection's
// in key order (scan, scanRecords), each folded into what a record shows
// (Get, List) once the trust checks have admitted its writes.

import (
	"context"
	"fmt"
	"strings"

	"github.com/ipfs/go-datastore/query"
)

// readRecord reads the visible operations of one record that count (see
// Trust).
func (s *Store) readRecord(ctx context.Context, collection, escapedID string) (*recordOps, error) {
	v, writers, err := s.viewFor(ctx, collection)
	if err != nil {
		return nil, err
	}
	rec := newRecordOps(escapedID)
	err = s.scan(ctx, recordPrefix(collection, escapedID).String()+"/", func(kp keyParts, w *write) error {
		s.admit(v, writers, collection, rec, kp, w)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.settle(ctx, v, writers, collection, rec)
}

// viewFor returns the trust view and the writers of a collection.
func (s *Store) viewFor(ctx context.Context, collection string) (*view, []string, error) {
	v, err := s.view(ctx)
	if err != nil || v == nil || strings.HasPrefix(collection, "_") {
		return v, nil, err
	}
	sc, err := s.Schema(ctx)
	if err != nil {
		return nil, nil, err
	}
	if c := sc.Collections[collection]; c != nil {
		return v, c.Writers, nil
	}
	return v, nil, nil
}

// admit adds the ops of a visible write to rec, or notes those that do not
// count as ignored.
func (s *Store) admit(v *view, writers []string, collection string, rec *recordOps, kp keyParts, w *write) {
	ignored := false
	for _, op := range w.Ops {
		if v != nil {
			reason := ""
			if v.badSig(writeKey(collection, kp.EscapedID, kp.Op).String()) || !v.officeVouched(w) {
				reason = ReasonBadSignature
			} else {
				reason = v.check(collection, kp.EscapedID, writers, op, w.Voucher)
			}
			if reason != "" {
				id, _ := UnescapeID(kp.EscapedID)
				rec.ignored = append(rec.ignored, IgnoredOp{Collection: collection, ID: id, Field: op.Field, Op: kp.Op, Reason: reason})
				ignored = true
				continue
			}
		}
		rec.add(op)
	}
	rec.noteWrite(w, ignored)
}

// settle finishes reading a record: when some visible operation does not
// count, what it superseded must show again, so the record is recomputed
// from its whole history.
func (s *Store) settle(ctx context.Context, v *view, writers []string, collection string, rec *recordOps) (*recordOps, error) {
	if len(rec.ignored) == 0 {
		rec.prune()
		return rec, nil
	}
	full, err := s.rebuildRecord(ctx, v, writers, collection, rec.escapedID)
	if err != nil {
		return nil, err
	}
	full.ignored, full.writes = rec.ignored, rec.writes
	return full, nil
}

// scan calls fn for each visible write under prefix (a key prefix ending
// in "/"), in key order. Writes that do not decode are counted, logged
// once, and skipped.
// Key order is the datastore's own: badger (every LSM store) iterates in
// order. The query asks for none, because go-ds-crdt applies an order by
// sorting the whole result in memory; a store over a datastore that does
// not iterate in order (a bare MapDatastore) splits records.
func (s *Store) scan(ctx context.Context, prefix string, fn func(keyParts, *write) error) error {
	res, err := s.eng().Query(ctx, query.Query{Prefix: prefix})
	if err != nil {
		return fmt.Errorf("query %s: %w", prefix, err)
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return fmt.Errorf("query %s: %w", prefix, r.Error)
		}
		kp, err := parseOpKey(r.Key)
		var w *write
		if err == nil {
			w, err = decodeWrite(kp, r.Value)
		}
		if err != nil {
			s.malformed.Add(1)
			if _, seen := s.loggedBad.LoadOrStore(r.Key, true); !seen {
				s.log.Warn("ignoring malformed write", "key", r.Key, "err", err)
			}
			continue
		}
		if err := fn(kp, w); err != nil {
			return err
		}
	}
	return nil
}

// scanRecords calls fn with the operations of each record of a collection,
// one record at a time (keys come sorted, so a record's writes are
// adjacent).
func (s *Store) scanRecords(ctx context.Context, collection string, fn func(*recordOps) error) error {
	v, writers, err := s.viewFor(ctx, collection)
	if err != nil {
		return err
	}
	return s.scanGrouped(ctx, collection, func(rec *recordOps, kp keyParts, w *write) {
		s.admit(v, writers, collection, rec, kp, w)
	}, func(rec *recordOps) error {
		rec, err := s.settle(ctx, v, writers, collection, rec)
		if err != nil {
			return err
		}
		return fn(rec)
	})
}

// scanGrouped scans a collection record by record: add is called with each
// visible write, done once a record's writes are all added.
func (s *Store) scanGrouped(ctx context.Context, collection string, add func(*recordOps, keyParts, *write), done func(*recordOps) error) error {
	var cur *recordOps
	err := s.scan(ctx, collectionPrefix(collection).String()+"/", func(kp keyParts, w *write) error {
		if cur != nil && cur.escapedID != kp.EscapedID {
			rec := cur
			cur = nil
			if err := done(rec); err != nil {
				return err
			}
		}
		if cur == nil {
			cur = newRecordOps(kp.EscapedID)
		}
		add(cur, kp, w)
		return nil
	})
	if err != nil {
		return err
	}
	if cur != nil {
		return done(cur)
	}
	return nil
}

// Get returns the visible state of a record, or ErrNotFound.
func (s *Store) Get(ctx context.Context, collection, id string) (*Record, error) {
	eid, err := EscapeID(id)
	if err != nil {
		return nil, err
	}
	ru, err := s.rulesFor(ctx, collection)
	if err != nil {
		return nil, err
	}
	ops, err := s.readRecord(ctx, collection, eid)
	if err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	rec, ok := ops.fold(collection, id, ru)
	if !ok {
		if mv, moved := ops.movedTo(); moved {
			return nil, movedError(collection, id, mv)
		}
		return nil, fmt.Errorf("%s/%s: %w", collection, id, ErrNotFound)
	}
	return rec, nil
}

// List calls fn for every existing record of a collection, in key order.
func (s *Store) List(ctx context.Context, collection string, fn func(*Record) error) error {
	return s.listFolded(ctx, collection, func(rec *Record, exists bool) error {
		if !exists {
			return nil
		}
		return fn(rec)
	})
}

// listFolded calls fn for every record of a collection that exists or is
// in conflict (a deleted record whose delete was concurrent with edits).
func (s *Store) listFolded(ctx context.Context, collection string, fn func(rec *Record, exists bool) error) error {
	return s.scanIDs(ctx, collection, func(ops *recordOps, id string, ru rules) error {
		rec, ok := ops.fold(collection, id, ru)
		if rec == nil {
			return nil
		}
		return fn(rec, ok)
	})
}

// scanIDs is scanRecords with each record's id and the collection's rules
// (ids that do not unescape are counted as malformed and skipped).
func (s *Store) scanIDs(ctx context.Context, collection string, fn func(ops *recordOps, id string, ru rules) error) error {
	ru, err := s.rulesFor(ctx, collection)
	if err != nil {
		return err
	}
	return s.scanRecords(ctx, collection, func(ops *recordOps) error {
		id, err := UnescapeID(ops.escapedID)
		if err != nil {
			s.malformed.Add(1)
			return nil
		}
		return fn(ops, id, ru)
	})
}
