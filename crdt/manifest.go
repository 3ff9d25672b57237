package crdt

import (
	"context"
	"fmt"
	"slices"

	ds "github.com/ipfs/go-datastore"
)

// An epoch's manifest: the record of collection EpochsCollection that names
// it and holds its cut.

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
				if v.badSig(writeKey(EpochsCollection, eid, kp.Op).String()) || v.check(EpochsCollection, eid, nil, op, w.Voucher) != "" {
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
