package heads

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/wire"
)

var westProtocol = wire.ChannelPrefix("west") + "/heads/" + wire.Version

// A service on a channel's protocol that allows B but not C: it exchanges
// with B (on connect and in ExchangeAll), skips C everywhere and refuses
// C's streams; a service on the default protocol cannot reach it.
func TestServiceProtocolAndAllow(t *testing.T) {
	hA, hB, hC, hD := testnet.Host(t), testnet.Host(t), testnet.Host(t), testnet.Host(t)
	var allowC atomic.Bool
	allow := func(p peer.ID) bool { return p == hB.ID() || p == hD.ID() || (p == hC.ID() && allowC.Load()) }
	recA, recB, recC, recD := newRecorder(), newRecorder(), newRecorder(), newRecorder()
	sA := newTestService(t, hA, Config{Heads: fixedHeads(testnet.CIDs(t, "A", 2)), Protocol: westProtocol, Allow: allow}, recA, nil)
	newTestService(t, hB, Config{Heads: fixedHeads(testnet.CIDs(t, "B", 1)), Protocol: westProtocol}, recB, nil)
	sC := newTestService(t, hC, Config{Heads: fixedHeads(testnet.CIDs(t, "C", 1)), Protocol: westProtocol}, recC, nil)
	sD := newTestService(t, hD, Config{Heads: fixedHeads(testnet.CIDs(t, "D", 1))}, recD, nil) // the default protocol

	if !slices.Contains(hA.Mux().Protocols(), westProtocol) || slices.Contains(hA.Mux().Protocols(), Protocol) {
		t.Fatalf("A serves %v, want %s and not %s", hA.Mux().Protocols(), westProtocol, Protocol)
	}
	// A dials C (A would initiate) and C dials A (C would initiate).
	testnet.Connect(t, hA, hB)
	testnet.Connect(t, hA, hC)
	testnet.Connect(t, hD, hA)
	testnet.WaitFor(t, 10*time.Second, func() bool { return recA.count(hB.ID()) > 0 && recB.count(hA.ID()) > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// C's exchange (its own on connect, and this one) is refused by A.
	if err := sC.Exchange(ctx, hA.ID()); err == nil {
		t.Fatal("C exchanged heads with A")
	}
	// D speaks the default protocol only: nothing to exchange with A.
	if err := sD.Exchange(ctx, hA.ID()); err == nil {
		t.Fatal("D exchanged heads with A on the default protocol")
	}

	res := sA.ExchangeAll(ctx)
	var peers []peer.ID
	for _, r := range res {
		peers = append(peers, r.Peer)
		if r.Peer == hB.ID() && r.Err != nil {
			t.Errorf("ExchangeAll with B: %v", r.Err)
		}
	}
	if slices.Contains(peers, hC.ID()) || !slices.Contains(peers, hB.ID()) || len(peers) != 2 {
		t.Errorf("ExchangeAll covered %v, want B and D, not C (%s)", peers, hC.ID())
	}
	for _, r := range res {
		if r.Peer == hD.ID() && (r.Err == nil || errors.Is(r.Err, ErrIncompatible)) {
			t.Errorf("ExchangeAll with D (default protocol): %v, want a failure that is not ErrIncompatible", r.Err)
		}
	}
	if err := sA.Exchange(ctx, hC.ID()); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("A's Exchange with C: %v, want ErrNotAllowed", err)
	}
	if n := recA.count(hC.ID()) + recC.count(hA.ID()); n != 0 {
		t.Errorf("A and C exchanged heads %d times", n)
	}
	if n := recA.count(hD.ID()) + recD.count(hA.ID()); n != 0 {
		t.Errorf("A and D exchanged heads %d times", n)
	}

	// A raw stream from C on the channel's protocol is reset unanswered.
	str, err := hC.NewStream(ctx, hA.ID(), westProtocol)
	if err != nil {
		t.Fatal(err)
	}
	_ = str.SetDeadline(time.Now().Add(10 * time.Second))
	if err := writeFrame(str, mustEncode(t, testnet.CIDs(t, "raw", 1))); err == nil {
		_ = str.CloseWrite()
		if reply, err := io.ReadAll(str); err == nil {
			t.Fatalf("A answered C's raw stream with %d bytes", len(reply))
		}
	}
	_ = str.Reset()
	if _, ok := sA.LastExchange(hC.ID()); ok {
		t.Error("A recorded an exchange with C")
	}

	// Allow is asked every time: once C is allowed, they exchange.
	allowC.Store(true)
	if err := sC.Exchange(ctx, hA.ID()); err != nil {
		t.Fatalf("C, now allowed: %v", err)
	}
	// The responder hands the heads over after replying.
	testnet.WaitFor(t, 10*time.Second, func() bool { return recA.count(hC.ID()) >= 1 })
}

// With a custom protocol and no FormatDetector, a peer that speaks only an
// older version of the default heads protocol is not reported as running
// another store format: the custom protocol's versions say nothing of it.
func TestServiceCustomProtocolSkipsFormats(t *testing.T) {
	hA, hOld := testnet.Host(t), testnet.Host(t)
	hOld.SetStreamHandler(oldProtocol, func(s network.Stream) { _ = s.Reset() })
	sA := newTestService(t, hA, Config{Heads: fixedHeads(testnet.CIDs(t, "A", 1)), Protocol: westProtocol}, newRecorder(), nil)
	testnet.Connect(t, hA, hOld)
	testnet.WaitFor(t, 10*time.Second, func() bool {
		protos, _ := hA.Peerstore().GetProtocols(hOld.ID())
		return slices.Contains(protos, oldProtocol)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := sA.Exchange(ctx, hOld.ID())
	if err == nil || errors.Is(err, ErrIncompatible) {
		t.Errorf("exchange: %v, want a failure that is not ErrIncompatible", err)
	}
}
