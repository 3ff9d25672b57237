package peering

import (
	"slices"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Learned peers: what peer exchange and mDNS feed the dial loop.

const (
	maxLearnedPeers   = 256
	learnedPeerWeight = 50
	// learnedAddrTTL is the peerstore TTL of learned addresses; a learned
	// peer neither connected nor heard of for that long is forgotten.
	learnedAddrTTL = 2 * time.Hour
)

// Learned returns the peers learned so far (through peer exchange or mDNS,
// connected or not, configured or not) with their learned addresses,
// sorted by id.
func (p *Peering) Learned() []peer.AddrInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]peer.AddrInfo, 0, p.nLearned)
	for id, t := range p.targets {
		if t.learned {
			out = append(out, peer.AddrInfo{ID: id, Addrs: slices.Clone(t.laddrs)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// learn records peers (never this host) and their addresses, at most
// maxLearnedPeers (evicting the one heard of longest ago among those not
// connected), then dials those due.
func (p *Peering) learn(source string, infos []peer.AddrInfo) {
	now := time.Now()
	p.mu.Lock()
	if p.g.Closed() {
		p.mu.Unlock()
		return
	}
	for _, info := range infos {
		if info.ID == p.h.ID() || info.ID == "" || len(info.Addrs) == 0 {
			continue
		}
		t := p.targets[info.ID]
		if t == nil || !t.learned {
			if p.nLearned >= maxLearnedPeers && !p.evictLocked() {
				p.log.Debug("learned peers full, ignoring peer", "peer", info.ID, "source", source)
				continue
			}
			if t == nil {
				t = &target{}
				p.targets[info.ID] = t
			}
			t.learned = true
			p.nLearned++
			p.log.Debug("learned peer", "peer", info.ID, "source", source, "addrs", info.Addrs)
		}
		t.laddrs = mergeAddrs(info.Addrs, t.laddrs)
		t.source = source
		t.seen = now
		p.h.Peerstore().AddAddrs(info.ID, info.Addrs, learnedAddrTTL)
		if p.h.Network().Connectedness(info.ID) == network.Connected {
			p.h.ConnManager().TagPeer(info.ID, LearnedTag, learnedPeerWeight)
		}
	}
	p.mu.Unlock()
	p.dialDue()
}

// evictLocked forgets the learned peer heard of longest ago among those not
// connected. It returns false if all are connected.
func (p *Peering) evictLocked() bool {
	var victim peer.ID
	var oldest time.Time
	for id, t := range p.targets {
		if !t.learned || p.h.Network().Connectedness(id) == network.Connected {
			continue
		}
		if victim == "" || t.seen.Before(oldest) {
			victim, oldest = id, t.seen
		}
	}
	if victim == "" {
		return false
	}
	p.forgetLocked(victim)
	return true
}

// expire forgets learned peers neither connected nor heard of for
// learnedAddrTTL, unless being dialed.
func (p *Peering) expire(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, t := range p.targets {
		if !t.learned {
			continue
		}
		if p.h.Network().Connectedness(id) == network.Connected {
			t.seen = now
			continue
		}
		if now.Sub(t.seen) > learnedAddrTTL && !t.dialing {
			p.forgetLocked(id)
		}
	}
}

// forgetLocked drops what was learned of id; a configured peer stays a
// target.
func (p *Peering) forgetLocked(id peer.ID) {
	t := p.targets[id]
	if t == nil || !t.learned {
		return
	}
	p.nLearned--
	p.h.ConnManager().UntagPeer(id, LearnedTag)
	if !t.configured {
		delete(p.targets, id)
		return
	}
	t.learned, t.laddrs, t.source, t.seen = false, nil, "", time.Time{}
}
