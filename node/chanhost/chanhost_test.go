package chanhost

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/wire"
)

// echoProto is a protocol of channel west.
var echoProto = wire.ChannelPrefix("west") + "/echo/1.0.0"

// echo is a handler that sends back what it reads, counting its calls.
type echo struct{ calls atomic.Int64 }

func (e *echo) handle(s network.Stream) {
	e.calls.Add(1)
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	data, err := io.ReadAll(s)
	if err != nil {
		_ = s.Reset()
		return
	}
	if _, err := s.Write(data); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// roundTrip opens a stream from h to p on proto, sends a message and
// checks the echo.
func roundTrip(h host.Host, p peer.ID, proto protocol.ID) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := h.NewStream(ctx, p, proto)
	if err != nil {
		return err
	}
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write([]byte("ping")); err != nil {
		_ = s.Reset()
		return fmt.Errorf("write: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return fmt.Errorf("close write: %w", err)
	}
	got, err := io.ReadAll(s)
	if err != nil {
		_ = s.Reset()
		return fmt.Errorf("read: %w", err)
	}
	if string(got) != "ping" {
		return fmt.Errorf("echo %q", got)
	}
	return s.Close()
}

func only(ids ...peer.ID) func(peer.ID) bool {
	return func(p peer.ID) bool {
		for _, id := range ids {
			if p == id {
				return true
			}
		}
		return false
	}
}

func TestAllowedPeerBothWays(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	cA := New(hA, "west", only(hB.ID()), testnet.Logger())
	cB := New(hB, "west", only(hA.ID()), testnet.Logger())
	if cA.Channel() != "west" {
		t.Errorf("Channel() = %q", cA.Channel())
	}
	var eA, eB echo
	cA.SetStreamHandler(echoProto, eA.handle)
	cB.SetStreamHandlerMatch(echoProto, func(id protocol.ID) bool { return id == echoProto }, eB.handle)
	testnet.Connect(t, hA, hB)

	if err := roundTrip(cA, hB.ID(), echoProto); err != nil {
		t.Fatalf("A to B: %v", err)
	}
	if err := roundTrip(cB, hA.ID(), echoProto); err != nil {
		t.Fatalf("B to A: %v", err)
	}
	if eA.calls.Load() != 1 || eB.calls.Load() != 1 {
		t.Errorf("handler calls A %d, B %d; want 1 each", eA.calls.Load(), eB.calls.Load())
	}
	if cA.Refused() != 0 || cB.Refused() != 0 {
		t.Errorf("refused A %d, B %d", cA.Refused(), cB.Refused())
	}
}

func TestInboundFromDisallowedPeerIsReset(t *testing.T) {
	hA, hB, hC := testnet.Host(t), testnet.Host(t), testnet.Host(t)
	cA := New(hA, "west", only(hB.ID()), testnet.Logger())
	var e echo
	cA.SetStreamHandler(echoProto, e.handle)
	var em echo
	cA.SetStreamHandlerMatch(echoProto+"-match", func(id protocol.ID) bool { return id == echoProto+"-match" }, em.handle)
	testnet.Connect(t, hC, hA)
	testnet.Connect(t, hB, hA)

	// C uses the raw host: only A's guard stands in its way.
	for i, proto := range []protocol.ID{echoProto, echoProto + "-match"} {
		if err := roundTrip(hC, hA.ID(), proto); err == nil {
			t.Fatalf("%s: C's stream was answered", proto)
		}
		testnet.WaitFor(t, 10*time.Second, func() bool { return cA.Refused() == int64(i+1) })
	}
	if e.calls.Load() != 0 || em.calls.Load() != 0 {
		t.Fatalf("the handler ran for a disallowed peer (%d, %d calls)", e.calls.Load(), em.calls.Load())
	}
	// The allowed peer is served meanwhile.
	if err := roundTrip(hB, hA.ID(), echoProto); err != nil {
		t.Fatalf("B: %v", err)
	}
	if e.calls.Load() != 1 {
		t.Errorf("handler calls %d, want 1", e.calls.Load())
	}
}

func TestNewStreamToDisallowedPeerFails(t *testing.T) {
	hA, hC := testnet.Host(t), testnet.Host(t)
	cA := New(hA, "west", only(), testnet.Logger())
	var e echo
	hC.SetStreamHandler(echoProto, e.handle)
	testnet.Connect(t, hA, hC)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := cA.NewStream(ctx, hC.ID(), echoProto)
	if err == nil {
		_ = s.Reset()
		t.Fatal("NewStream to a disallowed peer succeeded")
	}
	for _, want := range []string{hC.ID().String(), `"west"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if cA.Refused() != 1 {
		t.Errorf("Refused() = %d, want 1", cA.Refused())
	}
	for _, c := range hA.Network().ConnsToPeer(hC.ID()) {
		for _, s := range c.GetStreams() {
			if s.Protocol() == echoProto {
				t.Errorf("a stream on %s was opened", echoProto)
			}
		}
	}
	if e.calls.Load() != 0 {
		t.Error("C's handler ran")
	}
}

func TestResetStreams(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	cA := New(hA, "west", nil, testnet.Logger())
	// Handlers that echo until their stream ends, keeping it open.
	opened, ended := make(chan protocol.ID, 4), make(chan protocol.ID, 4)
	hold := func(s network.Stream) {
		opened <- s.Protocol()
		defer func() { ended <- s.Protocol() }()
		buf := make([]byte, 4)
		for {
			_ = s.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, err := s.Read(buf)
			if err != nil {
				return
			}
			if _, err := s.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	other := []protocol.ID{"/ferry/other/1.0.0", wire.ChannelPrefix("westward") + "/echo/1.0.0", wire.ChannelPrefix("wes") + "/echo/1.0.0"}
	cA.SetStreamHandler(echoProto, hold)
	for _, p := range other {
		hA.SetStreamHandler(p, hold)
	}
	testnet.Connect(t, hB, hA)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	streams := map[protocol.ID]network.Stream{}
	for _, p := range append([]protocol.ID{echoProto}, other...) {
		s, err := hB.NewStream(ctx, hA.ID(), p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Reset() })
		_ = s.SetDeadline(time.Now().Add(20 * time.Second))
		ping(t, s)
		streams[p] = s
	}
	for range streams {
		<-opened
	}

	if n := cA.ResetStreams(hB.ID()); n != 1 {
		t.Fatalf("ResetStreams = %d, want 1", n)
	}
	if _, err := streams[echoProto].Write([]byte("x")); err == nil {
		buf := make([]byte, 1)
		if _, err := streams[echoProto].Read(buf); err == nil {
			t.Fatal("the channel stream still works after ResetStreams")
		}
	}
	// Other protocols, and other channels whose names share a prefix, are
	// untouched.
	for _, p := range other {
		ping(t, streams[p])
	}
	// A stream is listed until its handler returns.
	if p := <-ended; p != echoProto {
		t.Fatalf("the handler of %s ended", p)
	}
	if n := cA.ResetStreams(hB.ID()); n != 0 {
		t.Errorf("second ResetStreams = %d, want 0", n)
	}
}

// ping checks that s echoes.
func ping(t *testing.T, s network.Stream) {
	t.Helper()
	if _, err := s.Write([]byte("ping")); err != nil {
		t.Fatalf("%s: write: %v", s.Protocol(), err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("%s: read %q: %v", s.Protocol(), buf, err)
	}
}

func TestAllowIsAskedPerStream(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	var granted atomic.Bool
	granted.Store(true)
	allow := func(p peer.ID) bool { return p == hB.ID() && granted.Load() }
	cA := New(hA, "west", allow, testnet.Logger())
	var eA, eB echo
	cA.SetStreamHandler(echoProto, eA.handle)
	hB.SetStreamHandler(echoProto, eB.handle)
	testnet.Connect(t, hA, hB)

	if err := roundTrip(hB, hA.ID(), echoProto); err != nil {
		t.Fatalf("granted, B to A: %v", err)
	}
	if err := roundTrip(cA, hB.ID(), echoProto); err != nil {
		t.Fatalf("granted, A to B: %v", err)
	}

	granted.Store(false)
	if err := roundTrip(hB, hA.ID(), echoProto); err == nil {
		t.Fatal("ungranted, B to A: answered")
	}
	if _, err := cA.NewStream(context.Background(), hB.ID(), echoProto); err == nil {
		t.Fatal("ungranted, A to B: opened")
	}
	testnet.WaitFor(t, 10*time.Second, func() bool { return cA.Refused() == 2 })
	if eA.calls.Load() != 1 || eB.calls.Load() != 1 {
		t.Errorf("handler calls A %d, B %d; want 1 each", eA.calls.Load(), eB.calls.Load())
	}

	granted.Store(true)
	if err := roundTrip(hB, hA.ID(), echoProto); err != nil {
		t.Fatalf("granted again, B to A: %v", err)
	}
	if err := roundTrip(cA, hB.ID(), echoProto); err != nil {
		t.Fatalf("granted again, A to B: %v", err)
	}
}
