package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/ipfs/go-datastore/query"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/datadir"
)

// Counting a stopped store's keys and their bytes: by kind (compaction)
// and by the store they belong to (channels).

// chanKeys counts a stopped data dir's keys and their bytes (key + value)
// by where they belong: the everyone store, each channel, the node's own.
type chanKeys struct {
	everyone, local keyAgg
	perChannel      map[string]*keyAgg
}

func (k chanKeys) channels() []string {
	out := make([]string, 0, len(k.perChannel))
	for c := range k.perChannel {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// channelTotal sums the channels' keys.
func (k chanKeys) channelTotal() keyAgg {
	var t keyAgg
	for _, a := range k.perChannel {
		t.count += a.count
		t.keys += a.keys
		t.value += a.value
	}
	return t
}

func (k chanKeys) String() string {
	fa := func(a keyAgg) string { return fmt.Sprintf("%d keys, %s", a.count, fmtBytes(a.keys+a.value)) }
	s := "everyone store " + fa(k.everyone)
	if len(k.perChannel) > 0 {
		s += fmt.Sprintf(", %d channels %s", len(k.perChannel), fa(k.channelTotal()))
	}
	return s + ", local " + fa(k.local)
}

// countChanKeys reads every key of a stopped node's store.
func countChanKeys(ctx context.Context, dir string) (k chanKeys, err error) {
	d, err := datadir.OpenStore(dir)
	if err != nil {
		return k, err
	}
	defer closeDatastore(d, &err)
	res, err := d.Query(ctx, query.Query{KeysOnly: true, ReturnsSizes: true})
	if err != nil {
		return k, err
	}
	defer res.Close()
	k.perChannel = map[string]*keyAgg{}
	for r := range res.Next() {
		if r.Error != nil {
			return k, r.Error
		}
		a := &k.everyone
		switch {
		case strings.HasPrefix(r.Key, "/ferry/ch/"):
			name, _, _ := strings.Cut(strings.TrimPrefix(r.Key, "/ferry/ch/"), "/")
			if a = k.perChannel[name]; a == nil {
				a = &keyAgg{}
				k.perChannel[name] = a
			}
		case strings.HasPrefix(r.Key, "/ferry/local/"):
			a = &k.local
		}
		a.count++
		a.keys += int64(len(r.Key))
		a.value += int64(r.Size)
	}
	return k, nil
}

// keyBreakdown counts a store's keys and their bytes (key + value) by kind.
type keyBreakdown map[string]*keyAgg

type keyAgg struct {
	count       int
	keys, value int64
}

func (kb keyBreakdown) total() (count int, bytes int64) {
	for _, a := range kb {
		count += a.count
		bytes += a.keys + a.value
	}
	return count, bytes
}

// format renders the kinds by bytes per record, largest first.
func (kb keyBreakdown) format(n int) string {
	kinds := make([]string, 0, len(kb))
	for k := range kb {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool {
		a, b := kb[kinds[i]], kb[kinds[j]]
		if x, y := a.keys+a.value, b.keys+b.value; x != y {
			return x > y
		}
		return kinds[i] < kinds[j]
	})
	count, bytes := kb.total()
	parts := []string{fmt.Sprintf("%s/record in %d keys (%.1f per record)", perRec(bytes, n), count, float64(count)/float64(n))}
	for _, k := range kinds {
		a := kb[k]
		parts = append(parts, fmt.Sprintf("%s %s (%.2f keys/record, %s key + %s value)", k, perRec(a.keys+a.value, n),
			float64(a.count)/float64(n), perRec(a.keys, n), perRec(a.value, n)))
	}
	return strings.Join(parts, "; ")
}

// countKeys reads every key and value of a store and adds them up by kind.
func countKeys(ctx context.Context, d interface {
	Query(context.Context, query.Query) (query.Results, error)
}) (keyBreakdown, error) {
	res, err := d.Query(ctx, query.Query{})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	kb := keyBreakdown{}
	for r := range res.Next() {
		if r.Error != nil {
			return nil, r.Error
		}
		kind := keyKind(r.Key)
		a := kb[kind]
		if a == nil {
			a = &keyAgg{}
			kb[kind] = a
		}
		a.count++
		a.keys += int64(len(r.Key))
		a.value += int64(len(r.Value))
	}
	return kb, nil
}

// keyKind names the kind of a store key (see crdt/engine.go for
// go-ds-crdt's layout): the epoch's namespace, /ferry/crdt or
// /ferry/crdt-<epoch>, is left out.
func keyKind(k string) string {
	switch {
	case strings.HasPrefix(k, crdt.HistoryRoot):
		return "history archive"
	case strings.HasPrefix(k, crdt.EpochRoot):
		return "epoch markers"
	case strings.HasPrefix(k, datadir.BlockNamespace.String()+"/"):
		return "blocks"
	}
	ns := crdt.DefaultOptions().Namespace.String()
	if rest, ok := strings.CutPrefix(k, ns); ok && (strings.HasPrefix(rest, "/") || strings.HasPrefix(rest, "-")) {
		if strings.HasPrefix(rest, "-") {
			i := strings.Index(rest, "/")
			if i < 0 {
				return "crdt other"
			}
			rest = rest[i:]
		}
		switch {
		case strings.HasPrefix(rest, "/s/k/") && strings.HasSuffix(rest, "/v"):
			return "value (s/k/…/v)"
		case strings.HasPrefix(rest, "/s/k/"):
			return "priority (s/k/…/p)"
		case strings.HasPrefix(rest, "/s/s/"):
			return "element (s/s)"
		case strings.HasPrefix(rest, "/s/t/"):
			return "tombstone (s/t)"
		case strings.HasPrefix(rest, "/b/"):
			return "processed mark (b)"
		case strings.HasPrefix(rest, "/h/"):
			return "head (h)"
		}
		return "crdt other"
	}
	parts := strings.SplitN(strings.TrimPrefix(k, "/"), "/", 3)
	return "/" + strings.Join(parts[:min(2, len(parts))], "/")
}
