package heads

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/internal/lifecycle"
	"github.com/ferry-crm/ferry/node/wire"
)

// ErrIncompatible is wrapped by the error of an exchange with a peer that
// runs another store format (see FormatDetector).
var ErrIncompatible = errors.New("incompatible store format")

// Incompatible is a peer that runs another store format than this node:
// nothing replicated is exchanged with it.
type Incompatible struct {
	Peer peer.ID
	// Format is the peer's store format (wire.StoreFormat is ours).
	Format int
	// Since is when it was detected.
	Since time.Time
	// Reason names the peer, both formats and which node to upgrade.
	Reason string
}

// FormatDetector finds the peers that run another store format: those that
// advertise (through libp2p identify) a version of the heads exchange
// protocol, but not ours. It logs each one once at warn level and keeps
// it until the peer advertises our version (it was upgraded). It watches
// identify's events on the host's event bus; Close stops it.
type FormatDetector struct {
	h     host.Host
	name  func(peer.ID) string
	log   *slog.Logger
	sub   event.Subscription
	group *lifecycle.Group

	checkMu sync.Mutex // one check at a time: a peer is logged once
	mu      sync.Mutex
	peers   map[peer.ID]Incompatible
}

// NewFormatDetector starts watching h's peers, those already connected
// included. name (may be nil) gives a peer's name for the message ("" for
// none: the peer id is used); it may read the store.
func NewFormatDetector(h host.Host, name func(peer.ID) string, log *slog.Logger) (*FormatDetector, error) {
	if log == nil {
		log = slog.Default()
	}
	sub, err := h.EventBus().Subscribe([]any{new(event.EvtPeerIdentificationCompleted), new(event.EvtPeerProtocolsUpdated)})
	if err != nil {
		return nil, fmt.Errorf("store format detector: subscribe: %w", err)
	}
	d := &FormatDetector{h: h, name: name, log: log, sub: sub, group: lifecycle.New(), peers: make(map[peer.ID]Incompatible)}
	// Subscribed first: a peer identified from now on is seen by the loop.
	peers := h.Network().Peers()
	d.group.Go(func(ctx context.Context) {
		for _, p := range peers {
			if ctx.Err() != nil {
				return
			}
			d.check(p)
		}
		d.loop(ctx)
	})
	return d, nil
}

func (d *FormatDetector) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-d.sub.Out():
			if !ok {
				return
			}
			switch e := e.(type) {
			case event.EvtPeerIdentificationCompleted:
				d.check(e.Peer)
			case event.EvtPeerProtocolsUpdated:
				d.check(e.Peer)
			}
		}
	}
}

// Incompatible returns the peers known to run another store format, sorted
// by peer id.
func (d *FormatDetector) Incompatible() []Incompatible {
	d.mu.Lock()
	out := make([]Incompatible, 0, len(d.peers))
	for _, i := range d.peers {
		out = append(out, i)
	}
	d.mu.Unlock()
	slices.SortFunc(out, func(a, b Incompatible) int { return strings.Compare(string(a.Peer), string(b.Peer)) })
	return out
}

// Peer reports whether p is known to run another store format, and why.
func (d *FormatDetector) Peer(p peer.ID) (Incompatible, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i, ok := d.peers[p]
	return i, ok
}

// Close stops watching. Safe to call more than once.
func (d *FormatDetector) Close() error {
	var err error
	d.group.Close(func() {
		if cerr := d.sub.Close(); cerr != nil {
			err = fmt.Errorf("store format detector: %w", cerr)
		}
	})
	return err
}

// check compares the heads exchange versions p advertises with ours and
// records the outcome. A peer that advertises none (not identified yet,
// not a Ferry node) keeps what was recorded.
func (d *FormatDetector) check(p peer.ID) (Incompatible, bool) {
	d.checkMu.Lock()
	defer d.checkMu.Unlock()
	format, ours, known := wire.PeerFormat(d.h.Peerstore(), p, ProtocolBase)
	prev, had := d.Peer(p)
	switch {
	case ours:
		if had {
			d.mu.Lock()
			delete(d.peers, p)
			d.mu.Unlock()
			d.log.Info("peer now runs this node's store format: syncing with it", "peer", p, "store_format", wire.StoreFormat)
		}
		return Incompatible{}, false
	case !known, had && prev.Format == format:
		return prev, had
	}
	inc := Incompatible{Peer: p, Format: format, Since: time.Now(), Reason: wire.Mismatch(d.who(p), format)}
	d.mu.Lock()
	d.peers[p] = inc
	d.mu.Unlock()
	d.log.Warn(inc.Reason, "peer", p, "peer_store_format", format, "store_format", wire.StoreFormat)
	return inc, true
}

// who is p's name and id, or its id.
func (d *FormatDetector) who(p peer.ID) string {
	if d.name != nil {
		if n := d.name(p); n != "" {
			return fmt.Sprintf("%s (%s)", n, p)
		}
	}
	return p.String()
}

// incompatibleErr is the error of an exchange with p that failed with err
// because p runs another store format, or nil if it does not.
func (s *Service) incompatibleErr(p peer.ID, err error) error {
	var reason string
	switch {
	case s.cfg.Formats != nil:
		inc, ok := s.cfg.Formats.check(p)
		if !ok {
			return nil
		}
		reason = inc.Reason
	case s.cfg.Protocol != Protocol:
		// A custom protocol: its versions say nothing of store formats.
		return nil
	default:
		format, ours, known := wire.PeerFormat(s.h.Peerstore(), p, ProtocolBase)
		if ours || !known {
			return nil
		}
		reason = wire.Mismatch(p.String(), format)
	}
	return fmt.Errorf("%w: %s (%w)", ErrIncompatible, reason, err)
}
