// Command keysize counts the keys and bytes of a stopped Ferry data dir's
// store by kind, to see where the bytes of a record go.
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/ipfs/go-datastore/query"

	"github.com/ferry-crm/ferry/node/datadir"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: keysize DATA_DIR RECORDS")
		os.Exit(2)
	}
	var n int
	fmt.Sscan(os.Args[2], &n)
	d, err := datadir.OpenStore(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer d.Close()
	res, err := d.Query(context.Background(), query.Query{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	type agg struct{ count, keys, vals int }
	by := map[string]*agg{}
	for r := range res.Next() {
		if r.Error != nil {
			fmt.Fprintln(os.Stderr, r.Error)
			os.Exit(1)
		}
		kind := kindOf(r.Key)
		a := by[kind]
		if a == nil {
			a = &agg{}
			by[kind] = a
		}
		a.count++
		a.keys += len(r.Key)
		a.vals += len(r.Value)
	}
	kinds := make([]string, 0, len(by))
	for k := range by {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	total := 0
	fmt.Printf("| key | count | key + value bytes | bytes/record |\n|---|---|---|---|\n")
	for _, k := range kinds {
		a := by[k]
		total += a.keys + a.vals
		fmt.Printf("| `%s` | %d | %d + %d | %.0f |\n", k, a.count, a.keys, a.vals, float64(a.keys+a.vals)/float64(n))
	}
	fmt.Printf("| **all** | | %d | **%.0f** |\n", total, float64(total)/float64(n))
}

func kindOf(k string) string {
	switch {
	case strings.HasPrefix(k, "/ferry/crdt/s/k/") && strings.HasSuffix(k, "/v"):
		return "/ferry/crdt/s/k/<write>/v"
	case strings.HasPrefix(k, "/ferry/crdt/s/k/"):
		return "/ferry/crdt/s/k/<write>/p"
	case strings.HasPrefix(k, "/ferry/crdt/s/s/"):
		return "/ferry/crdt/s/s/<write>/<block>"
	case strings.HasPrefix(k, "/ferry/crdt/s/t/"):
		return "/ferry/crdt/s/t/<write>/<block>"
	case strings.HasPrefix(k, "/ferry/blocks/"):
		return "/ferry/blocks/<block> (compressed)"
	}
	parts := strings.SplitN(strings.TrimPrefix(k, "/"), "/", 4)
	if len(parts) > 3 {
		parts = parts[:3]
	}
	return "/" + strings.Join(parts, "/")
}
