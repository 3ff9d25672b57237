package peering

import (
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
)

// multicastInterfaces lists the interfaces zeroconf would use: up, with the
// MULTICAST flag.
func multicastInterfaces() []string {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []string
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 {
			out = append(out, ifi.Name)
		}
	}
	return out
}

func TestMDNSServiceName(t *testing.T) {
	a, b := MDNSServiceName("ferry"), MDNSServiceName("ferry2")
	if a == b || len(a) != len("_ferry-12345678._udp") || a[:7] != "_ferry-" || a[15:] != "._udp" {
		t.Errorf("service names %q %q", a, b)
	}
}

func TestMDNS(t *testing.T) {
	topic := fmt.Sprintf("ferry-mdns-test-%d", time.Now().UnixNano())
	hA := newTestHost(t)
	dA := newTestPeering(t, hA, Config{MDNS: true, Topic: topic}, nil)
	ifaces := multicastInterfaces()
	if len(ifaces) == 0 {
		// The start was attempted (and failed, logged); stopping is clean.
		if err := dA.Close(); err != nil {
			t.Fatal(err)
		}
		t.Skip("mDNS not testable here: no interface is up with the MULTICAST flag (net.Interfaces); " +
			"the mDNS service start was attempted and the Peering closed cleanly")
	}
	if !dA.mdnsOn.Load() {
		t.Fatalf("mDNS did not start although %v support multicast", ifaces)
	}
	hC := newTestHost(t) // another Ferry network on the same LAN
	newTestPeering(t, hC, Config{MDNS: true, Topic: topic + "-other"}, nil)
	hB := newTestHost(t)
	dB := newTestPeering(t, hB, Config{MDNS: true, Topic: topic}, nil)

	testnet.WaitFor(t, 30*time.Second, func() bool {
		return connected(hA, hB.ID()) && slices.Contains(learnedIDs(dA), hB.ID()) && slices.Contains(learnedIDs(dB), hA.ID())
	})
	if slices.Contains(learnedIDs(dA), hC.ID()) || slices.Contains(learnedIDs(dB), hC.ID()) {
		t.Error("found a node of another Ferry network")
	}

	// No announcing while offline; back online, mDNS runs again.
	dA.SetOffline(true)
	testnet.WaitFor(t, 10*time.Second, func() bool { return !dA.mdnsOn.Load() })
	dA.SetOffline(false)
	testnet.WaitFor(t, 10*time.Second, func() bool { return dA.mdnsOn.Load() })

	if err := dA.Close(); err != nil {
		t.Fatal(err)
	}
	if dA.mdnsOn.Load() {
		t.Error("mDNS still on after Close")
	}
}

// reconcileMDNS restarts the service when the network changed (another
// fingerprint) and stops it when offline. The loop is stopped (Close) so
// that the test owns the mDNS state.
func TestMDNSReconcile(t *testing.T) {
	if len(multicastInterfaces()) == 0 {
		t.Skip("mDNS not testable here: no interface is up with the MULTICAST flag")
	}
	p := newTestPeering(t, newTestHost(t), Config{MDNS: true, Topic: "ferry-mdns-reconcile"}, nil)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	defer p.stopMDNS()
	p.reconcileMDNS(false)
	first := p.mdns.svc
	if first == nil || !p.mdnsOn.Load() {
		t.Fatal("mDNS not started")
	}
	p.reconcileMDNS(false) // checked just now: nothing to do
	if p.mdns.svc != first {
		t.Fatal("restarted without a network change")
	}
	p.mdns.fp, p.mdns.checked = "another network", time.Time{}
	p.reconcileMDNS(false)
	if p.mdns.svc == nil || p.mdns.svc == first || p.mdns.fp != p.netFingerprint() {
		t.Fatal("not restarted on a network change")
	}
	p.reconcileMDNS(true)
	if p.mdns.svc != nil || p.mdnsOn.Load() {
		t.Fatal("still running offline")
	}
}
