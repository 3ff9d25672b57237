package peering

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// The dial loop. Every peer that should be connected is a target: a
// configured peer (kept until Close), a learned one (through peer exchange
// or mDNS, forgotten by expire or evicted), or both. One goroutine looks at
// every target when woken (a connection came up or went down, a peer was
// learned, the node went online) and at least every loopTick, and starts a
// dial for each target that is not connected, not being dialed and due.
//
// One backoff for all, with per-kind bounds (kind):
//   - a new target is due at once;
//   - a failed dial sets backoff = nextBackoff(backoff) and makes the target
//     due after jitter(backoff), in [backoff/2, backoff];
//   - when a connection drops, a connection that lasted stableAfter or
//     more resets the backoff and the target is due after min; a shorter
//     one counts as a failure, without jitter (due after the new backoff);
//   - going offline or online resets every target: due at once.
//
// Configured peers: min and max from Config, stableAfter 0 (any successful
// connection resets the backoff), dialed without limit. Learned peers:
// 10s to 5min, stableAfter one minute, at most maxConcurrentDials dials at
// once.

const (
	// dialAttemptTimeout bounds one dial attempt.
	dialAttemptTimeout = 15 * time.Second
	// loopTick is the longest the dial loop sleeps (expiry runs then).
	loopTick = time.Second

	learnedDialMin = 10 * time.Second
	learnedDialMax = 5 * time.Minute
	// stableConnAge: a connection to a learned peer that lasted that long
	// resets its backoff.
	stableConnAge = time.Minute

	maxConcurrentDials = 8
)

// kind holds the backoff parameters of a kind of target.
type kind struct {
	min, max time.Duration
	// stableAfter: a connection that lasted that long resets the backoff.
	stableAfter time.Duration
	// limited dials wait for a slot of dialSem.
	limited bool
}

var learnedKind = kind{min: learnedDialMin, max: learnedDialMax, stableAfter: stableConnAge, limited: true}

// target is a peer the dial loop keeps connected. Guarded by Peering.mu.
type target struct {
	configured bool
	addrs      []multiaddr.Multiaddr // configured addresses

	learned bool
	laddrs  []multiaddr.Multiaddr // learned, newest first, at most maxAddrsPerPeer
	source  string
	seen    time.Time // last heard of or connected

	backoff   time.Duration
	nextDial  time.Time
	dialing   bool
	connected bool      // as last seen by the loop or a dial
	since     time.Time // when connected was set
}

func (p *Peering) kindOf(t *target) kind {
	if t.configured {
		return p.configured
	}
	return learnedKind
}

// dialLoop runs until Close.
func (p *Peering) dialLoop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
		case <-p.wake:
		case <-ctx.Done():
			return
		}
		wait := p.dialDue()
		p.expire(time.Now())
		p.loops.Add(1)
		timer.Reset(wait)
	}
}

// dialDue updates every target's state, starts a dial for each target that
// is due, and returns how long until the next one is (at most loopTick).
// Nothing is dialed while offline.
func (p *Peering) dialDue() time.Duration {
	wait := loopTick
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.g.Closed() || p.offline.Load() {
		return wait
	}
	for id, t := range p.targets {
		if t.dialing {
			continue
		}
		if p.h.Network().Connectedness(id) == network.Connected {
			if !t.connected {
				t.connected, t.since = true, now
			}
			continue
		}
		if t.connected {
			p.dropped(t, now)
		}
		if d := t.nextDial.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		t.dialing = true
		p.attempts.Add(1)
		info := peer.AddrInfo{ID: id, Addrs: slices.Concat(t.addrs, t.laddrs)}
		k, epoch := p.kindOf(t), p.epoch
		if !p.g.Go(func(ctx context.Context) { p.dial(ctx, info, k, epoch) }) {
			t.dialing = false
		}
	}
	return wait
}

// dropped records that t's connection went down.
func (p *Peering) dropped(t *target, now time.Time) {
	k := p.kindOf(t)
	t.connected = false
	if now.Sub(t.since) >= k.stableAfter {
		t.backoff = 0
		t.nextDial = now.Add(k.min)
	} else {
		t.backoff = nextBackoff(t.backoff, k.min, k.max)
		t.nextDial = now.Add(t.backoff)
	}
}

// dial is one attempt started by dialDue.
func (p *Peering) dial(ctx context.Context, info peer.AddrInfo, k kind, epoch uint64) {
	err := p.connect(ctx, info, k.limited)
	now := time.Now()
	p.mu.Lock()
	t := p.targets[info.ID]
	current := t != nil && p.epoch == epoch && !p.g.Closed()
	var backoff time.Duration
	if t != nil {
		t.dialing = false
	}
	if current {
		switch {
		case err == nil:
			if !t.connected {
				t.connected, t.since = true, now
			}
			if t.learned {
				p.h.ConnManager().TagPeer(info.ID, LearnedTag, learnedPeerWeight)
			}
		case !errors.Is(err, errSkipped):
			t.backoff = nextBackoff(t.backoff, k.min, k.max)
			t.nextDial = now.Add(jitter(t.backoff))
			backoff = t.backoff
		}
	}
	p.mu.Unlock()
	switch {
	case !current || errors.Is(err, errSkipped):
	case err == nil:
		p.log.Info("connected to peer", "peer", info.ID, "configured", !k.limited)
	default:
		p.log.Debug("dial failed", "peer", info.ID, "configured", !k.limited, "err", err, "backoff", backoff)
	}
	signal(p.wake)
}

// errSkipped: the dial did not happen (offline, closing, already connected).
var errSkipped = errors.New("dial skipped")

func (p *Peering) connect(ctx context.Context, info peer.AddrInfo, limited bool) error {
	if limited {
		select {
		case p.dialSem <- struct{}{}:
			defer func() { <-p.dialSem }()
		case <-ctx.Done():
			return errSkipped
		}
	}
	if p.offline.Load() || ctx.Err() != nil {
		return errSkipped
	}
	if p.h.Network().Connectedness(info.ID) == network.Connected {
		return nil
	}
	if len(info.Addrs) == 0 {
		return errors.New("no address")
	}
	ctx, cancel := context.WithTimeout(ctx, dialAttemptTimeout)
	defer cancel()
	// Our own backoff governs retries: bypass the swarm's per-address dial
	// backoff, which grows to minutes after a few failures.
	ctx = network.WithForceDirectDial(ctx, "ferry peering")
	err := p.h.Connect(ctx, info)
	if err != nil && p.g.Closed() {
		return errSkipped
	}
	return err
}

// resetBackoffs makes every target due at once and forgets whether it was
// connected (going offline or online is not a dropped connection). Dials
// already running report to an older epoch and are ignored.
func (p *Peering) resetBackoffs() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.epoch++
	for _, t := range p.targets {
		t.backoff, t.nextDial, t.connected = 0, time.Time{}, false
	}
}

// nextBackoff returns the next nominal delay: lo, then doubling up to hi.
// The one backoff of every target; kinds differ by their bounds.
func nextBackoff(prev, lo, hi time.Duration) time.Duration {
	if prev <= 0 {
		return lo
	}
	return min(prev*2, hi)
}

// jitter draws a delay uniformly from [nominal/2, nominal].
func jitter(nominal time.Duration) time.Duration {
	if nominal <= 0 {
		return 0
	}
	return nominal/2 + rand.N(nominal/2+1)
}
