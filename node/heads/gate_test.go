package heads

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
	dscrdt "github.com/ipfs/go-ds-crdt"
)

func TestGate(t *testing.T) {
	h := testnet.Host(t)
	b := newTestBroadcaster(t, h, newTestPubSub(t, h))
	g := NewGate(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	payload := mustEncode(t, testnet.CIDs(t, "gate", 1))
	if err := g.Inject(ctx, h.ID(), payload); err != nil {
		t.Fatal(err)
	}
	// Closed gate: the payload waits.
	if data, err := nextWithin(g, 100*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("closed gate: Next = %q, %v", data, err)
	}
	got := make(chan []byte, 1)
	go func() {
		data, err := g.Next(ctx)
		if err != nil {
			t.Errorf("Next: %v", err)
		}
		got <- data
	}()
	g.Open()
	g.Open() // harmless
	select {
	case data := <-got:
		if !bytes.Equal(data, payload) {
			t.Fatal("payload differs")
		}
	case <-ctx.Done():
		t.Fatal("Next did not return after Open")
	}
}

func TestGateClosedBroadcaster(t *testing.T) {
	h := testnet.Host(t)
	b := newTestBroadcaster(t, h, newTestPubSub(t, h))
	g := NewGate(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := g.Next(ctx)
		done <- err
	}()
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, dscrdt.ErrNoMoreBroadcast) {
			t.Fatalf("Next on a closed gate after Close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Next did not return after Close")
	}
}
