package crdt

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pb "github.com/ipfs/go-ds-crdt/pb"
)

// Signatures. One write (a put of several fields of one record, a delete,
// one imported record) is signed once: the signature covers every op of the
// write, and each op carries it. The ops of one write share their op id and
// always travel in one delta, so a node verifies a delta's writes when
// go-ds-crdt merges it, once per write. Signing once per write rather than
// once per op makes an import of 8-field records sign 8 times less.

// writeMessage is what a write's signature covers: a domain tag, then each
// op's key and envelope without the signature, in key order, one per line
// (keys hold no newline; encoded JSON holds no raw newline).
func writeMessage(keys []string, unsigned [][]byte) []byte {
	n := 16
	for i := range keys {
		n += len(keys[i]) + len(unsigned[i]) + 2
	}
	msg := make([]byte, 0, n)
	msg = append(msg, "ferry-write/1\n"...)
	for i := range keys {
		msg = append(msg, keys[i]...)
		msg = append(msg, '\n')
		msg = append(msg, unsigned[i]...)
		msg = append(msg, '\n')
	}
	return msg
}

// sigOverhead is what a signature adds to an encoded op: `,"g":"<88
// base64 characters>"`.
const sigOverhead = 95

// withSig adds a signature to an encoded op. The signature is the
// envelope's last field, so appending it gives exactly what encoding the
// envelope with it would.
func withSig(unsigned, sig []byte) []byte {
	out := make([]byte, 0, len(unsigned)+base64.StdEncoding.EncodedLen(len(sig))+8)
	out = append(out, unsigned[:len(unsigned)-1]...) // without the closing brace
	out = append(out, `,"g":"`...)
	out = base64.StdEncoding.AppendEncode(out, sig)
	return append(out, `"}`...)
}

// signWrite returns the stored form of the ops of one write (keys sorted),
// each carrying the write's signature; unchanged in an open network.
func (s *Store) signWrite(keys []ds.Key, unsigned [][]byte) ([][]byte, error) {
	if s.opts.Trust == nil {
		return unsigned, nil
	}
	ks := make([]string, len(keys))
	for i, k := range keys {
		ks[i] = k.String()
	}
	if !sort.StringsAreSorted(ks) {
		return nil, errors.New("bug: the ops of a write are not in key order")
	}
	sig, err := s.opts.Trust.Sign(writeMessage(ks, unsigned))
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", ks[0], err)
	}
	out := make([][]byte, len(unsigned))
	for i, u := range unsigned {
		out[i] = withSig(u, sig)
	}
	return out, nil
}

// encodeOp encodes the single op of a write (a delete, a keep), signed.
func (s *Store) encodeOp(key ds.Key, op Op) ([]byte, error) {
	b, err := encodeOp(op)
	if err != nil {
		return nil, err
	}
	out, err := s.signWrite([]ds.Key{key}, [][]byte{b})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// sign encodes a plan's ops with their signature.
func (s *Store) sign(p *writePlan) error {
	values, err := s.signWrite(p.keys, p.unsigned)
	p.values = values
	return err
}

// signAll signs many plans on every core: signing (~27 µs a write) is a
// large part of an import's CPU time otherwise.
func (s *Store) signAll(plans []*writePlan) error {
	if s.opts.Trust == nil || len(plans) < 8 {
		for _, p := range plans {
			if err := s.sign(p); err != nil {
				return err
			}
		}
		return nil
	}
	workers := min(runtime.GOMAXPROCS(0), len(plans))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(plans); i += workers {
				if err := s.sign(plans[i]); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// verifyDelta checks the signature of every write in a delta and returns,
// by op key, whether its write verified. A write is the ops of the delta
// that share an op id; they must all carry the same signature, by the
// writer of the op id, over all of them.
func (s *Store) verifyDelta(d *pb.Delta) map[string]bool {
	type member struct {
		key string
		env envelope
	}
	groups := map[OpID][]member{}
	ok := map[string]bool{}
	for _, el := range d.GetElements() {
		key := el.GetKey()
		ok[key] = false
		kp, err := parseOpKey(key)
		if err != nil {
			continue
		}
		env, err := decodeEnvelope(kp, el.GetValue())
		if err != nil {
			continue
		}
		groups[kp.Op] = append(groups[kp.Op], member{key: key, env: env})
	}
	for id, ms := range groups {
		sort.Slice(ms, func(i, j int) bool { return ms[i].key < ms[j].key })
		keys := make([]string, len(ms))
		unsigned := make([][]byte, len(ms))
		sig := ms[0].env.Sig
		good := len(sig) > 0
		for i := 0; good && i < len(ms); i++ {
			if i > 0 && (ms[i].key == ms[i-1].key || string(ms[i].env.Sig) != string(sig)) {
				good = false
				break
			}
			env := ms[i].env
			env.Sig = nil
			b, err := marshalEnvelope(env)
			if err != nil {
				good = false
				break
			}
			keys[i], unsigned[i] = ms[i].key, b
		}
		good = good && s.opts.Trust.Verify(id.Writer, writeMessage(keys, unsigned), sig)
		for _, m := range ms {
			ok[m.key] = good
		}
	}
	return ok
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
