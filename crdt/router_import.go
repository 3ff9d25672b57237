package crdt

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Import writes many records of one collection (see Store.Import).
func (r *Router) Import(ctx context.Context, collection string, recs []ImportRecord, progress func(done int)) (ImportResult, error) {
	return r.ImportWith(ctx, collection, recs, ImportOptions{}, progress)
}

// ImportWith is Import with options.
func (r *Router) ImportWith(ctx context.Context, collection string, recs []ImportRecord, opts ImportOptions, progress func(done int)) (ImportResult, error) {
	var p func(done, total int)
	if progress != nil {
		p = func(done, _ int) { progress(done) }
	}
	return r.ImportStream(ctx, collection, ImportSlice(recs), opts, p)
}

// ImportStream imports the records of src into one collection (see
// Store.ImportStream). A routed collection's records are split by channel:
// a record already held goes where it is, a new one where its routing field
// sends it. When they go to more than one channel, every channel's part is
// validated first (a dry run), so that a bad record still writes nothing.
// Each channel's part reads src twice more.
func (r *Router) ImportStream(ctx context.Context, collection string, src ImportSource, opts ImportOptions, progress func(done, total int)) (ImportResult, error) {
	c := r.routing(ctx, collection)
	if c == nil {
		return r.all.ImportStream(ctx, collection, src, opts, progress)
	}
	// Where each record goes: the channel store that holds it, or the one
	// its values route it to.
	existing := map[string]string{} // id → channel
	for _, s := range r.channelStores() {
		ix, err := s.scanExistence(ctx, collection)
		if err != nil {
			return ImportResult{}, fmt.Errorf("import %s: %w", collection, err)
		}
		for id := range ix.known {
			if prev, ok := existing[id]; !ok || ix.exists[id] || prev == "" {
				existing[id] = s.opts.Channel
			}
		}
	}
	var res ImportResult
	var where []string // by ordinal in src: the record's channel ("" = left out)
	counts := map[string]int{}
	n := 0
	err := readSource(src, func(rec ImportRecord) error {
		n++
		ch, ok := existing[rec.ID]
		if !ok {
			var err error
			if ch, err = c.ChannelOf(rec.Fields); err != nil {
				if !opts.SkipInvalid {
					return fmt.Errorf("line %d: %w", rec.Line, err)
				}
				res.Rejected = append(res.Rejected, ImportRejection{Line: rec.Line, ID: rec.ID, Reason: err.Error()})
				where = append(where, "")
				return nil
			}
		}
		where = append(where, ch)
		counts[ch]++
		return nil
	})
	if err != nil {
		return res, sourceError(collection, err)
	}
	total := n
	channels := make([]string, 0, len(counts))
	for ch := range counts {
		channels = append(channels, ch)
	}
	slices.Sort(channels)
	stores := make(map[string]*Store, len(channels))
	for _, ch := range channels {
		s := r.Channel(ch)
		if s == nil && !opts.DryRun {
			var err error
			if s, err = r.storeFor(ctx, ch); err != nil {
				return res, fmt.Errorf("import %s: %d records: %w", collection, counts[ch], err)
			}
		}
		if s == nil {
			if s = r.Channel(ch); s == nil {
				return res, fmt.Errorf("import %s: %d records: channel %s: %w", collection, counts[ch], ch, ErrChannelNotHeld)
			}
		}
		stores[ch] = s
	}
	part := func(ch string) ImportSource {
		return func(yield func(ImportRecord) error) error {
			i := 0
			return src(func(rec ImportRecord) error {
				mine := i < len(where) && where[i] == ch
				i++
				if !mine {
					return nil
				}
				return yield(rec)
			})
		}
	}
	if len(channels) > 1 && !opts.DryRun && !opts.SkipInvalid {
		dry := opts
		dry.DryRun = true
		for _, ch := range channels {
			if _, err := stores[ch].ImportStream(ctx, collection, part(ch), dry, nil); err != nil {
				return res, fmt.Errorf("channel %s: %w", ch, err)
			}
		}
	}
	var mu sync.Mutex
	doneBefore := 0
	for _, ch := range channels {
		var p func(done, total int)
		if progress != nil {
			base := doneBefore
			p = func(done, _ int) {
				mu.Lock()
				defer mu.Unlock()
				progress(base+done, total)
			}
		}
		got, err := stores[ch].ImportStream(ctx, collection, part(ch), opts, p)
		res.Written += got.Written
		res.Created += got.Created
		res.Unchanged += got.Unchanged
		res.Deltas += got.Deltas
		res.Rejected = append(res.Rejected, got.Rejected...)
		if err != nil {
			return res, fmt.Errorf("channel %s: %w", ch, err)
		}
		doneBefore += counts[ch]
	}
	res.Records = total
	slices.SortFunc(res.Rejected, func(a, b ImportRejection) int { return a.Line - b.Line })
	return res, nil
}
