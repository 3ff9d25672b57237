package digestsync

import (
	"context"
	"crypto/sha256"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/wire"
)

// fakeStore holds records as "collection/id" -> value, in bucket 0.
type fakeStore map[string]string

func (f fakeStore) DigestBuckets(context.Context) (crdt.DigestBuckets, error) {
	var b crdt.DigestBuckets
	for k, v := range f {
		h := sha256.Sum256([]byte(k + "=" + v))
		for i := range b[0] {
			b[0][i] ^= h[i]
		}
	}
	return b, nil
}

func (f fakeStore) RecordHashes(_ context.Context, buckets []int) (map[string]crdt.Digest, error) {
	out := map[string]crdt.Digest{}
	if !slices.Contains(buckets, 0) {
		return out, nil
	}
	for k, v := range f {
		out[k] = sha256.Sum256([]byte(k + "=" + v))
	}
	return out, nil
}

func newTestService(t testing.TB, h host.Host, store Digests, opts ...Option) *Service {
	t.Helper()
	s := New(h, store, testnet.Logger(), opts...)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestCompare(t *testing.T) {
	hA, hB := testnet.Host(t), testnet.Host(t)
	sA := newTestService(t, hA, fakeStore{"contacts/c1": "x", "contacts/c2": "y"})
	newTestService(t, hB, fakeStore{"contacts/c1": "x", "contacts/c3": "z"})
	testnet.Connect(t, hA, hB)
	testnet.WaitFor(t, 10*time.Second, func() bool { return slices.Contains(sA.Peers(), hB.ID()) })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmp, err := sA.Compare(ctx, hB.ID())
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{{Collection: "contacts", ID: "c2", Here: true}, {Collection: "contacts", ID: "c3", There: true}}
	if !slices.Equal(cmp.Records, want) || cmp.Digest == cmp.PeerDigest {
		t.Errorf("Compare = %+v, want records %+v", cmp, want)
	}
}

// A service on a channel's protocol compares with a peer on the same
// protocol, lists only such peers, and neither reaches nor is reached by a
// service on the default protocol.
func TestProtocol(t *testing.T) {
	west := wire.ChannelPrefix("west") + "/digest/" + wire.Version
	hA, hB, hC := testnet.Host(t), testnet.Host(t), testnet.Host(t)
	store := fakeStore{"contacts/c1": "x"}
	sA := newTestService(t, hA, store, WithProtocol(west))
	sB := newTestService(t, hB, store, WithProtocol(west))
	sC := newTestService(t, hC, store) // the default protocol
	if !slices.Contains(hA.Mux().Protocols(), west) || slices.Contains(hA.Mux().Protocols(), Protocol) {
		t.Fatalf("A serves %v, want %s and not %s", hA.Mux().Protocols(), west, Protocol)
	}
	testnet.Connect(t, hA, hB)
	testnet.Connect(t, hA, hC)
	testnet.Connect(t, hB, hC)
	// Identify has told each side the others' protocols.
	testnet.WaitFor(t, 10*time.Second, func() bool {
		return slices.Contains(sA.Peers(), hB.ID()) && slices.Contains(sB.Peers(), hA.ID()) &&
			speaks(hA, hC.ID(), Protocol) && speaks(hC, hA.ID(), west)
	})
	if got := sA.Peers(); !slices.Equal(got, []peer.ID{hB.ID()}) {
		t.Errorf("A's peers %v, want only B %s", got, hB.ID())
	}
	if got := sC.Peers(); len(got) != 0 {
		t.Errorf("C's peers %v, want none", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmp, err := sB.Compare(ctx, hA.ID())
	if err != nil {
		t.Fatal(err)
	}
	if len(cmp.Records) != 0 || cmp.Digest != cmp.PeerDigest {
		t.Errorf("same store compared as different: %+v", cmp)
	}
	if _, err := sC.Buckets(ctx, hA.ID()); err == nil {
		t.Error("a service on the default protocol reached one on a channel's")
	}
	if _, err := sA.Buckets(ctx, hC.ID()); err == nil {
		t.Error("a service on a channel's protocol reached one on the default")
	}

	if err := sA.Close(); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(hA.Mux().Protocols(), west) {
		t.Errorf("A still serves %s after Close", west)
	}
}

// speaks reports whether h knows (from identify) that p speaks id.
func speaks(h host.Host, p peer.ID, id protocol.ID) bool {
	ok, err := h.Peerstore().SupportsProtocols(p, id)
	return err == nil && len(ok) > 0
}
