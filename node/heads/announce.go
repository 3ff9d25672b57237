package heads

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// go-ds-crdt announces only the heads of its own writes (and, every minute,
// heads nobody else announced). A node that merged a peer's heads does not
// pass them on, so a laptop connected only to the office would wait for
// the other laptop's rebroadcast timer. The announce loop closes that gap:
// whenever our heads change, for any reason, it exchanges heads with every
// connected peer over Protocol (a direct stream, not a GossipSub message
// that can be lost while a mesh forms). The periodic loop does the same on
// a timer, whether heads changed or not.

// loopExchangeTimeout bounds one exchange started by a loop.
const loopExchangeTimeout = 10 * time.Second

// ExchangeAll exchanges heads with every connected peer that Config.Allow
// accepts at once, in parallel, and returns one Result per such peer,
// sorted by peer ID. ctx bounds the whole.
func (s *Service) ExchangeAll(ctx context.Context) []Result {
	return s.exchangeAll(ctx, 0)
}

// exchangeAll bounds each exchange by timeout (0: only by ctx).
func (s *Service) exchangeAll(ctx context.Context, timeout time.Duration) []Result {
	peers := slices.DeleteFunc(s.h.Network().Peers(), func(p peer.ID) bool { return !s.allowed(p) })
	slices.SortFunc(peers, func(a, b peer.ID) int { return strings.Compare(string(a), string(b)) })
	out := make([]Result, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		out[i].Peer = p
		wg.Go(func() {
			ectx := ctx
			if timeout > 0 {
				var cancel context.CancelFunc
				ectx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			out[i].Err = s.Exchange(ectx, p)
		})
	}
	wg.Wait()
	return out
}

// announceLoop exchanges with every connected peer when our heads changed
// since the last announcement: after Changed (debounced) or at the
// fallback check.
func (s *Service) announceLoop(ctx context.Context) {
	var tick <-chan time.Time
	if s.cfg.AnnounceCheck > 0 {
		t := time.NewTicker(s.cfg.AnnounceCheck)
		defer t.Stop()
		tick = t.C
	}
	var last []cid.Cid
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-s.changed:
			t := time.NewTimer(s.cfg.AnnounceDebounce)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		heads, err := s.ourHeads(ctx)
		if err != nil || len(heads) == 0 {
			continue
		}
		heads = slices.Clone(heads) // Heads may return a shared slice
		slices.SortFunc(heads, func(a, b cid.Cid) int { return strings.Compare(a.KeyString(), b.KeyString()) })
		if slices.Equal(heads, last) {
			continue
		}
		last = heads
		s.exchangeAllLogged(ctx, "announce heads")
	}
}

// periodicLoop exchanges with every connected peer every Config.Interval.
func (s *Service) periodicLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.exchangeAllLogged(ctx, "periodic heads exchange")
		}
	}
}

func (s *Service) exchangeAllLogged(ctx context.Context, what string) {
	for _, r := range s.exchangeAll(ctx, loopExchangeTimeout) {
		if r.Err != nil && ctx.Err() == nil {
			s.log.Debug(what, "peer", r.Peer, "err", r.Err)
		}
	}
}

// ourHeads calls Config.Heads, which may be nil.
func (s *Service) ourHeads(ctx context.Context) ([]cid.Cid, error) {
	if s.cfg.Heads == nil {
		return nil, nil
	}
	heads, err := s.cfg.Heads(ctx)
	if err != nil {
		return nil, fmt.Errorf("list heads: %w", err)
	}
	return heads, nil
}
