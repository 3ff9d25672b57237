package datadir

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/klauspost/compress/zstd"
)

// Blocks are kept compressed: a block of a delta holds the writes of up to
// a few hundred records, and its keys and field names repeat, so zstd
// shrinks it to about a third. A block's CID stays the hash of its raw
// bytes: the block store (and everything above it, bitswap included) only
// ever sees raw bytes; the compression is in the datastore under it. A
// stored value that starts with zstd's frame magic number is compressed;
// any other value is the raw block (a dag-pb block never starts with it),
// so blocks written raw (by earlier releases, or when compression did not
// pay) read as they are.

// MaxBlockSize bounds a decompressed block (go-ds-crdt's deltas stay under
// 1 MiB; bitswap's blocks under 2 MiB).
const MaxBlockSize = 4 << 20

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

var (
	zEncOnce sync.Once
	zEnc     *zstd.Encoder
	zDec     *zstd.Decoder
)

func codecs() (*zstd.Encoder, *zstd.Decoder) {
	zEncOnce.Do(func() {
		var err error
		zEnc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		if err != nil {
			panic(fmt.Sprintf("zstd encoder: %v", err))
		}
		zDec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxBlockSize), zstd.WithDecoderMaxWindow(MaxBlockSize))
		if err != nil {
			panic(fmt.Sprintf("zstd decoder: %v", err))
		}
	})
	return zEnc, zDec
}

// CompressBlock returns the stored form of a block: compressed when that
// is smaller, else the raw bytes.
func CompressBlock(raw []byte) []byte {
	enc, _ := codecs()
	c := enc.EncodeAll(raw, make([]byte, 0, len(raw)/2))
	if len(c) >= len(raw) {
		return raw
	}
	return c
}

// DecompressBlock returns the raw block of a stored value.
func DecompressBlock(stored []byte) ([]byte, error) {
	if !bytes.HasPrefix(stored, zstdMagic) {
		return stored, nil
	}
	_, dec := codecs()
	raw, err := dec.DecodeAll(stored, nil)
	if err != nil {
		return nil, fmt.Errorf("decompress block: %w", err)
	}
	if len(raw) > MaxBlockSize {
		return nil, fmt.Errorf("decompress block: %d bytes", len(raw))
	}
	return raw, nil
}

// compressedStore keeps the values of d compressed (CompressBlock).
type compressedStore struct{ ds.Batching }

func newCompressedStore(d ds.Batching) ds.Batching { return compressedStore{d} }

func (c compressedStore) Put(ctx context.Context, k ds.Key, v []byte) error {
	return c.Batching.Put(ctx, k, CompressBlock(v))
}

func (c compressedStore) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	v, err := c.Batching.Get(ctx, k)
	if err != nil {
		return nil, err
	}
	return DecompressBlock(v)
}

func (c compressedStore) GetSize(ctx context.Context, k ds.Key) (int, error) {
	v, err := c.Get(ctx, k)
	if err != nil {
		return -1, err
	}
	return len(v), nil
}

func (c compressedStore) Query(ctx context.Context, q query.Query) (query.Results, error) {
	res, err := c.Batching.Query(ctx, q)
	if err != nil || q.KeysOnly {
		return res, err
	}
	return query.ResultsFromIterator(q, query.Iterator{
		Next: func() (query.Result, bool) {
			r, ok := res.NextSync()
			if ok && r.Error == nil {
				r.Value, r.Error = DecompressBlock(r.Value)
				r.Size = len(r.Value)
			}
			return r, ok
		},
		Close: res.Close,
	}), nil
}

func (c compressedStore) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := c.Batching.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return compressedBatch{b}, nil
}

type compressedBatch struct{ ds.Batch }

func (b compressedBatch) Put(ctx context.Context, k ds.Key, v []byte) error {
	return b.Batch.Put(ctx, k, CompressBlock(v))
}
