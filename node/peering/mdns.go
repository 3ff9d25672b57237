package peering

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
)

// mDNS: with Config.MDNS, the node announces itself and browses for nodes
// of the same Ferry network on the LAN, exactly while online; what it finds
// is learned (source "mdns") and dialed by the dial loop.

const (
	// mdnsTick is how often the mDNS loop reconciles.
	mdnsTick = time.Second
	// mdnsRetry is the delay before retrying an mDNS start that failed (no
	// multicast interface, no address yet).
	mdnsRetry = 30 * time.Second
	// mdnsCheckEvery is how often the interfaces and listen addresses are
	// compared with those mDNS was started with; on a change (another
	// network) the service is restarted so it announces current addresses.
	mdnsCheckEvery = 5 * time.Second
)

// MDNSServiceName is the mDNS service announced and browsed for a Ferry
// network's topic: "_ferry-<8 hex digits of sha256(topic)>._udp".
func MDNSServiceName(topic string) string {
	sum := sha256.Sum256([]byte(topic))
	return "_ferry-" + hex.EncodeToString(sum[:4]) + "._udp"
}

// mdnsState is owned by New, then by mdnsLoop.
type mdnsState struct {
	name    string
	svc     mdns.Service
	failed  time.Time
	warned  bool
	fp      string // netFingerprint when svc started
	checked time.Time
}

// mdnsLoop reconciles every mdnsTick and when the offline mode changes; it
// stops the service when the Peering closes.
func (p *Peering) mdnsLoop(ctx context.Context) {
	defer p.stopMDNS()
	t := time.NewTicker(mdnsTick)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-p.mdnsWake:
		case <-ctx.Done():
			return
		}
		p.reconcileMDNS(p.offline.Load())
	}
}

// reconcileMDNS runs mDNS exactly when configured and online, restarting it
// when the network changed.
func (p *Peering) reconcileMDNS(offline bool) {
	m := &p.mdns
	if !p.cfg.MDNS || offline {
		if m.svc != nil {
			p.stopMDNS()
			p.log.Info("mDNS stopped (offline)")
		}
		return
	}
	now := time.Now()
	if m.svc != nil {
		if now.Sub(m.checked) < mdnsCheckEvery {
			return
		}
		m.checked = now
		if fp := p.netFingerprint(); fp != m.fp {
			p.log.Info("network changed: restarting mDNS")
			p.stopMDNS()
			p.startMDNS(now)
		}
		return
	}
	if !m.failed.IsZero() && now.Sub(m.failed) < mdnsRetry {
		return
	}
	p.startMDNS(now)
}

func (p *Peering) startMDNS(now time.Time) {
	m := &p.mdns
	fp := p.netFingerprint()
	svc := mdns.NewMdnsService(p.h, m.name, mdnsNotifee{p})
	if err := svc.Start(); err != nil {
		_ = svc.Close()
		m.failed = now
		level := slog.LevelDebug
		if !m.warned {
			m.warned, level = true, slog.LevelWarn
		}
		p.log.Log(p.g.Context(), level, "mDNS unavailable, will retry", "err", err, "retry_in", mdnsRetry)
		return
	}
	m.svc, m.fp, m.checked, m.failed, m.warned = svc, fp, now, time.Time{}, false
	p.mdnsOn.Store(true)
	p.log.Info("mDNS started", "service", m.name)
}

func (p *Peering) stopMDNS() {
	if p.mdns.svc == nil {
		return
	}
	_ = p.mdns.svc.Close()
	p.mdns.svc = nil
	p.mdnsOn.Store(false)
}

// netFingerprint summarises the multicast interfaces and the host's
// interface listen addresses, which mDNS uses when it starts.
func (p *Peering) netFingerprint() string {
	var parts []string
	if ifaces, err := net.Interfaces(); err == nil {
		for _, ifi := range ifaces {
			if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 {
				parts = append(parts, fmt.Sprintf("if:%d:%s", ifi.Index, ifi.Name))
			}
		}
	}
	if addrs, err := p.h.Network().InterfaceListenAddresses(); err == nil {
		for _, a := range addrs {
			parts = append(parts, a.String())
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// mdnsNotifee receives mDNS results.
type mdnsNotifee struct{ p *Peering }

// HandlePeerFound is called by the mdns service, from its own goroutines,
// possibly while or after the Peering closes.
func (n mdnsNotifee) HandlePeerFound(info peer.AddrInfo) {
	p := n.p
	if info.ID == p.h.ID() || p.offline.Load() || !p.g.Enter() {
		return
	}
	defer p.g.Leave()
	if addrs := usableAddrs(info.Addrs, info.ID, true); len(addrs) > 0 {
		p.learn("mdns", []peer.AddrInfo{{ID: info.ID, Addrs: addrs}})
	}
}
