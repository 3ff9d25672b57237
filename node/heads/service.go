package heads

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/lifecycle"
)

// Defaults of Config's announce timers.
const (
	// DefaultAnnounceDebounce groups head changes (a catch-up changes heads
	// once per merged block) into one announcement.
	DefaultAnnounceDebounce = 50 * time.Millisecond
	// DefaultAnnounceCheck is the fallback period at which our heads are
	// compared with the last ones announced, in case a change was not
	// signalled.
	DefaultAnnounceCheck = time.Second
)

// Config is what a Service needs from the node.
type Config struct {
	// Heads returns our current heads (the crdt store's heads). A nil Heads
	// means we have none.
	Heads func(ctx context.Context) ([]cid.Cid, error)
	// Epoch returns the epoch our heads belong to (nil: the first).
	Epoch func() crdt.Epoch
	// Receive is given every valid, non-empty heads payload a peer sent us
	// in an exchange (either role): the node catches up on the blocks and
	// injects the heads into its Broadcaster. It runs on the exchange's
	// goroutine with a bounded ctx; it may be nil.
	Receive func(ctx context.Context, from peer.ID, payload []byte)
	// Interval is the period of the exchange with every connected peer
	// (0: no periodic exchange), on top of the exchanges on connect and on
	// change.
	Interval time.Duration
	// AnnounceDebounce is how long the announce loop waits after Changed
	// before comparing heads (<= 0: DefaultAnnounceDebounce).
	AnnounceDebounce time.Duration
	// AnnounceCheck is the period at which the announce loop compares heads
	// without being told by Changed (0: DefaultAnnounceCheck; < 0: never).
	AnnounceCheck time.Duration
	// Formats, if set, is asked why a peer does not speak Protocol: an
	// exchange with a peer of another store format fails with
	// ErrIncompatible and its message, which the detector logs once.
	// Without it the peerstore is read directly (and nothing is logged),
	// unless Protocol is not the default one: then no store format is
	// detected (a custom protocol's version need not follow the store
	// format's). With it, a custom protocol's exchange is judged by the
	// versions of the default Protocol the peer speaks.
	Formats *FormatDetector
	// Protocol is the protocol id the exchange runs on, handler and
	// outgoing streams ("": Protocol). A channel's heads exchange runs on
	// one under wire.ChannelPrefix.
	Protocol protocol.ID
	// Allow, if set, is the peers the service exchanges heads with: the
	// exchanges on connect, on change, periodic and ExchangeAll skip the
	// others, Exchange with one of them fails, and their streams are
	// reset unanswered. It is asked every time, so it may change.
	Allow func(peer.ID) bool
}

// Result is one peer's outcome of ExchangeAll.
type Result struct {
	Peer peer.ID
	Err  error // nil when the exchange succeeded
}

// Service exchanges heads with peers over Protocol (or Config.Protocol) and owns every trigger
// of an exchange: a connection coming up, our heads changing (Changed), a
// timer (Config.Interval) and the caller (Exchange, ExchangeAll). It
// remembers, per peer, when the last exchange succeeded and which heads
// the peer sent.
type Service struct {
	h        host.Host
	cfg      Config
	log      *slog.Logger
	notifiee *network.NotifyBundle
	group    *lifecycle.Group
	changed  chan struct{} // signalled by Changed

	mu        sync.Mutex
	running   map[peer.ID]int        // exchanges in progress, either role
	last      map[peer.ID]time.Time  // last successful exchange, either role
	peerHeads map[peer.ID][]cid.Cid  // the last non-empty heads each peer sent
	peerEpoch map[peer.ID]crdt.Epoch // the epoch of each peer's last heads
}

// New registers the Config.Protocol handler and a network notifiee on h and
// starts the announce loop and, with cfg.Interval > 0, the periodic
// exchange. Whenever a connection comes up, an exchange runs in the
// background: at once on outbound connections, and on inbound ones only
// if the dialing side did not start one within a short delay. Exchanges
// also start for peers already connected when New is called. Close stops
// it all.
func New(h host.Host, cfg Config, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	if cfg.AnnounceDebounce <= 0 {
		cfg.AnnounceDebounce = DefaultAnnounceDebounce
	}
	if cfg.AnnounceCheck == 0 {
		cfg.AnnounceCheck = DefaultAnnounceCheck
	}
	if cfg.Protocol == "" {
		cfg.Protocol = Protocol
	}
	s := &Service{
		h:         h,
		cfg:       cfg,
		log:       log,
		group:     lifecycle.New(),
		changed:   make(chan struct{}, 1),
		running:   make(map[peer.ID]int),
		last:      make(map[peer.ID]time.Time),
		peerHeads: make(map[peer.ID][]cid.Cid),
		peerEpoch: make(map[peer.ID]crdt.Epoch),
	}
	s.notifiee = &network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) { s.onConnected(c) },
	}
	h.SetStreamHandler(cfg.Protocol, s.handle)
	h.Network().Notify(s.notifiee)
	for _, c := range h.Network().Conns() {
		s.onConnected(c)
	}
	s.group.Go(s.announceLoop)
	if cfg.Interval > 0 {
		s.group.Go(s.periodicLoop)
	}
	return s
}

// Changed tells the service that our heads may have changed: the announce
// loop compares them, after a short debounce, and exchanges with every
// connected peer if they did. It never blocks (go-ds-crdt's merge hooks
// call it).
func (s *Service) Changed() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// LastExchange returns the time of the last successful exchange with p (as
// initiator or responder).
func (s *Service) LastExchange(p peer.ID) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.last[p]
	return t, ok
}

// PeerHeads returns the heads p sent in the last exchange in which it had
// some (nil if it never did). They are the heads as p sent them, before
// Config.Receive saw them.
func (s *Service) PeerHeads(p peer.ID) []cid.Cid {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.peerHeads[p])
}

// Close removes the protocol handler and the notifiee, stops the loops,
// cancels running exchanges and waits for them. Safe to call more than
// once.
func (s *Service) Close() error {
	s.group.Close(func() {
		s.h.RemoveStreamHandler(s.cfg.Protocol)
		s.h.Network().StopNotify(s.notifiee)
	})
	return nil
}

// begin marks an exchange with p as running; with skipIfRunning it refuses
// when one already is.
func (s *Service) begin(p peer.ID, skipIfRunning bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if skipIfRunning && s.running[p] > 0 {
		return false
	}
	s.running[p]++
	return true
}

func (s *Service) end(p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[p]--; s.running[p] <= 0 {
		delete(s.running, p)
	}
}

func (s *Service) isRunning(p peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[p] > 0
}

// done records a successful exchange with p, in which p sent heads.
func (s *Service) done(p peer.ID, heads []cid.Cid, ep crdt.Epoch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last[p] = time.Now()
	s.peerEpoch[p] = ep
	if len(heads) > 0 {
		s.peerHeads[p] = heads
	}
}

// PeerEpoch returns the epoch p's heads belonged to in the last exchange
// (ok false if none happened).
func (s *Service) PeerEpoch(p peer.ID) (crdt.Epoch, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ep, ok := s.peerEpoch[p]
	return ep, ok
}

// allowed reports whether heads may be exchanged with p (Config.Allow).
func (s *Service) allowed(p peer.ID) bool {
	return s.cfg.Allow == nil || s.cfg.Allow(p)
}

// ourEpoch is the epoch of our heads.
func (s *Service) ourEpoch() crdt.Epoch {
	if s.cfg.Epoch == nil {
		return crdt.Epoch{}
	}
	return s.cfg.Epoch()
}
