package crdt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pb "github.com/ipfs/go-ds-crdt/pb"
)

// Signatures. One write (a put of several fields of one record, a delete,
// one imported record) is one element, signed once by its writer: the
// signature covers the element's key and its encoded form (see Format).
// A node verifies a delta's writes when go-ds-crdt merges it.

// writeMessage is what a write's signature covers: a domain tag, the key,
// and the stored value without the signature.
func writeMessage(key string, unsigned []byte) []byte {
	msg := make([]byte, 0, 16+len(key)+len(unsigned))
	msg = append(msg, "ferry-write/2\n"...)
	msg = append(msg, key...)
	msg = append(msg, '\n')
	return append(msg, unsigned...)
}

// sigOverhead is what a signature adds to an encoded write (ed25519).
const sigOverhead = 64

// signWrite returns the stored form of writes, each with its signature;
// unchanged in an open network.
func (s *Store) signWrite(keys []ds.Key, unsigned [][]byte) ([][]byte, error) {
	if s.opts.Trust == nil {
		return unsigned, nil
	}
	out := make([][]byte, len(unsigned))
	for i, u := range unsigned {
		sig, err := s.opts.Trust.Sign(writeMessage(keys[i].String(), u))
		if err != nil {
			return nil, fmt.Errorf("sign %s: %w", keys[i], err)
		}
		out[i] = append(u[:len(u):len(u)], sig...)
	}
	return out, nil
}

// sign encodes a plan's ops with their signature.
func (s *Store) sign(p *writePlan) error {
	values, err := s.signWrite(p.keys, p.unsigned)
	p.values = values
	return err
}

// signBatch signs the writes of one import delta with one signature
// (signing is ~30 µs a write, the largest part of an import's CPU time
// otherwise). Each write's flags say it is batch-signed; the signature
// covers every write of the batch, in key order (batchMessage), and each
// carries it: a node verifies the batch once, when it merges the delta.
func (s *Store) signBatch(plans []*writePlan) error {
	if s.opts.Trust == nil || len(plans) == 1 {
		for _, p := range plans {
			if err := s.sign(p); err != nil {
				return err
			}
		}
		return nil
	}
	sorted := slices.Clone(plans)
	slices.SortFunc(sorted, func(a, b *writePlan) int { return strings.Compare(a.keys[0].String(), b.keys[0].String()) })
	keys := make([]string, len(sorted))
	unsigned := make([][]byte, len(sorted))
	for i, p := range sorted {
		if len(p.keys) != 1 || len(p.unsigned) != 1 {
			return errors.New("bug: a write plan of several elements")
		}
		if i > 0 && p.keys[0].String() == keys[i-1] {
			return errors.New("bug: two writes of one key in a batch")
		}
		p.unsigned[0][1] |= flagBatch
		keys[i], unsigned[i] = p.keys[0].String(), p.unsigned[0]
	}
	sig, err := s.opts.Trust.Sign(batchMessage(keys, unsigned))
	if err != nil {
		return fmt.Errorf("sign a batch of %d writes: %w", len(keys), err)
	}
	for _, p := range sorted {
		u := p.unsigned[0]
		p.values = [][]byte{append(u[:len(u):len(u)], sig...)}
	}
	return nil
}

// batchMessage is what the signature of a batch covers: a domain tag, then
// for each write in key order its key and its stored form without the
// signature, each preceded by its length (uvarint).
func batchMessage(keys []string, unsigned [][]byte) []byte {
	n := 16
	for i := range keys {
		n += len(keys[i]) + len(unsigned[i]) + 2*binary.MaxVarintLen32
	}
	msg := make([]byte, 0, n)
	msg = append(msg, "ferry-batch/2\n"...)
	for i := range keys {
		msg = binary.AppendUvarint(msg, uint64(len(keys[i])))
		msg = append(msg, keys[i]...)
		msg = binary.AppendUvarint(msg, uint64(len(unsigned[i])))
		msg = append(msg, unsigned[i]...)
	}
	return msg
}

// verifyDelta checks the signature of every write in a delta and returns,
// by write key, whether it verified: signed by the writer of its op id, over
// its key and its stored form (or, for a write migrated from store format 1,
// over its ops as format 1 stored them).
func (s *Store) verifyDelta(d *pb.Delta) map[string]bool {
	ok := map[string]bool{}
	type member struct {
		key string
		w   *write
	}
	batches := map[string][]member{} // writer + signature -> its writes here
	for _, el := range d.GetElements() {
		key := el.GetKey()
		ok[key] = false
		kp, err := parseOpKey(key)
		if err != nil {
			continue
		}
		w, err := decodeWrite(kp, el.GetValue())
		if err != nil || len(w.Sig) == 0 {
			continue
		}
		if w.Voucher != "" {
			ok[key] = s.opts.Trust.Verify(w.Voucher, writeMessage(key, w.signed), w.Sig)
			continue
		}
		if w.Batch {
			id := kp.Op.Writer + "\n" + string(w.Sig)
			batches[id] = append(batches[id], member{key, w})
			continue
		}
		ok[key] = s.verifyWrite(kp, w)
	}
	for id, ms := range batches {
		writer, _, _ := strings.Cut(id, "\n")
		sort.Slice(ms, func(i, j int) bool { return ms[i].key < ms[j].key })
		keys := make([]string, len(ms))
		unsigned := make([][]byte, len(ms))
		good := true
		for i, m := range ms {
			if i > 0 && m.key == keys[i-1] {
				good = false
			}
			keys[i], unsigned[i] = m.key, m.w.signed
		}
		good = good && s.opts.Trust.Verify(writer, batchMessage(keys, unsigned), ms[0].w.Sig)
		for _, m := range ms {
			ok[m.key] = good
		}
	}
	return ok
}

// vouch returns the stored form of a batch-signed write w (key, as stored
// in value) signed by this node alone: the batch flag cleared, the vouched
// flag set, this node's signature over it and this node's id. Only an
// office vouches (a compaction's seed): a node verifies a vouched write
// against the voucher's key, and counts it only if the voucher is an
// office (see Store.admit).
func (s *Store) vouch(key string, w *write) ([]byte, error) {
	unsigned := append([]byte{}, w.signed...)
	unsigned[1] = (unsigned[1] &^ flagBatch) | flagVouched
	sig, err := s.opts.Trust.Sign(writeMessage(key, unsigned))
	if err != nil {
		return nil, fmt.Errorf("vouch for %s: %w", key, err)
	}
	return append(append(unsigned, sig...), s.opts.Writer...), nil
}

// verifyWrite checks one decoded write's signature.
func (s *Store) verifyWrite(kp keyParts, w *write) bool {
	var msg []byte
	if w.Legacy {
		m, err := legacyMessage(kp, w)
		if err != nil {
			return false
		}
		msg = m
	} else {
		msg = writeMessage(writeKey(kp.Collection, kp.EscapedID, kp.Op).String(), w.signed)
	}
	return s.opts.Trust.Verify(kp.Op.Writer, msg, w.Sig)
}

// elementRef is one element go-ds-crdt merges: an op key and the block
// that carries it.
type elementRef struct{ key, block string }

// vetElements is called with the elements of a batch go-ds-crdt is about to
// commit for a remote delta. It verifies their writes and marks, in the
// same batch, the ops that have no correctly signed element (an op may
// arrive in several blocks: one that verifies is enough, so a peer cannot
// get an op ignored by replaying part of its write). The returned func,
// called once the batch is committed, updates the in-memory marks.
func (s *Store) vetElements(ctx context.Context, b ds.Write, elems []elementRef) (func(), error) {
	cache := map[string]*pb.Delta{}
	verified := map[string]map[string]bool{} // block -> op key -> ok
	var marked, unmarked []string
	for _, e := range elems {
		ok, done := verified[e.block]
		if !done {
			d, _, err := s.blockDelta(ctx, e.block, cache)
			if err != nil {
				return nil, fmt.Errorf("verify block %s: %w", e.block, err)
			}
			ok = s.verifyDelta(d)
			verified[e.block] = ok
		}
		mark := ds.RawKey(s.badSigRoot() + e.key)
		switch {
		case ok[e.key]:
			if s.isBadSig(e.key) {
				if err := b.Delete(ctx, mark); err != nil {
					return nil, err
				}
				unmarked = append(unmarked, e.key)
			}
		case s.isBadSig(e.key):
		default:
			other, err := s.hasOtherElement(ctx, e)
			if err != nil {
				return nil, err
			}
			if other {
				continue // a correctly signed element of it was merged before
			}
			if err := b.Put(ctx, mark, nil); err != nil {
				return nil, err
			}
			marked = append(marked, e.key)
		}
	}
	return func() {
		for _, k := range marked {
			s.badSig.Store(k, true)
		}
		for _, k := range unmarked {
			s.badSig.Delete(k)
		}
		if len(marked)+len(unmarked) > 0 {
			s.membersStale.Store(true)
			for _, k := range append(marked, unmarked...) {
				s.keyChanged(k)
			}
		}
	}, nil
}

// hasOtherElement reports whether the op of e was merged from another
// block already.
func (s *Store) hasOtherElement(ctx context.Context, e elementRef) (bool, error) {
	prefix := s.layout().elems().String() + e.key + "/"
	res, err := s.base.Query(ctx, query.Query{Prefix: prefix, KeysOnly: true})
	if err != nil {
		return false, err
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return false, r.Error
		}
		if strings.TrimPrefix(r.Key, prefix) != e.block {
			return true, nil
		}
	}
	return false, nil
}
