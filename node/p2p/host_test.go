package p2p

import (
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/multiformats/go-multiaddr"
)

// newTestHostWithKey starts a host closed at the end of the test.
func newTestHostWithKey(t testing.TB, key crypto.PrivKey, addrs ...string) host.Host {
	t.Helper()
	if len(addrs) == 0 {
		addrs = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	h, err := NewHost(HostConfig{Key: key, ListenAddrs: testnet.Addrs(t, addrs...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func newTestHost(t testing.TB, addrs ...string) host.Host {
	t.Helper()
	return newTestHostWithKey(t, testnet.Key(t), addrs...)
}

func TestHostTCP(t *testing.T) {
	a := newTestHost(t, "/ip4/127.0.0.1/tcp/0")
	b := newTestHost(t, "/ip4/127.0.0.1/tcp/0")
	testnet.Connect(t, a, b)
	if got := a.Network().Connectedness(b.ID()); got != network.Connected {
		t.Fatalf("connectedness = %s", got)
	}
	conns := a.Network().ConnsToPeer(b.ID())
	if len(conns) == 0 {
		t.Fatal("no connection")
	}
	if sec := conns[0].ConnState().Security; sec != "/noise" {
		t.Errorf("security = %q, want /noise", sec)
	}
	if _, err := conns[0].RemoteMultiaddr().ValueForProtocol(multiaddr.P_TCP); err != nil {
		t.Errorf("not a TCP connection: %s", conns[0].RemoteMultiaddr())
	}
}

func TestHostQUIC(t *testing.T) {
	a := newTestHost(t, "/ip4/127.0.0.1/udp/0/quic-v1")
	b := newTestHost(t, "/ip4/127.0.0.1/udp/0/quic-v1")
	testnet.Connect(t, a, b)
	conns := a.Network().ConnsToPeer(b.ID())
	if len(conns) == 0 {
		t.Fatal("no connection")
	}
	if _, err := conns[0].RemoteMultiaddr().ValueForProtocol(multiaddr.P_QUIC_V1); err != nil {
		t.Errorf("not a QUIC connection: %s", conns[0].RemoteMultiaddr())
	}
}

func TestHostListenErrorNamesAddress(t *testing.T) {
	a := newTestHost(t, "/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1")
	for _, proto := range []int{multiaddr.P_TCP, multiaddr.P_QUIC_V1} {
		var taken string
		for _, ma := range a.Network().ListenAddresses() {
			if _, err := ma.ValueForProtocol(proto); err == nil {
				taken = ma.String()
			}
		}
		if taken == "" {
			t.Fatalf("no listen address for protocol %d", proto)
		}
		h, err := NewHost(HostConfig{Key: testnet.Key(t), ListenAddrs: testnet.Addrs(t, "/ip4/127.0.0.1/tcp/0", taken)})
		if err == nil {
			_ = h.Close()
			t.Fatalf("listening twice on %s succeeded", taken)
		}
		if !strings.Contains(err.Error(), taken) {
			t.Errorf("error %q does not name %s", err, taken)
		}
	}
	if _, err := NewHost(HostConfig{}); err == nil {
		t.Error("NewHost without key succeeded")
	}
}
