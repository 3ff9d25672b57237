package datadir

import (
	"context"
	"fmt"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

// PrefixSize counts the keys under prefix and their bytes, keys and values
// (values by the sizes the datastore reports, without reading them).
func PrefixSize(ctx context.Context, d ds.Read, prefix string) (keys int, bytes int64, err error) {
	res, err := d.Query(ctx, query.Query{Prefix: prefix, KeysOnly: true, ReturnsSizes: true})
	if err != nil {
		return 0, 0, fmt.Errorf("size of %s: %w", prefix, err)
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return keys, bytes, fmt.Errorf("size of %s: %w", prefix, r.Error)
		}
		keys++
		bytes += int64(len(r.Key) + r.Size)
	}
	return keys, bytes, nil
}
