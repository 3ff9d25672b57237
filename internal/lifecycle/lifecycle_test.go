package lifecycle

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestCloseCancelsAndWaits(t *testing.T) {
	g := New()
	var done atomic.Bool
	started := make(chan struct{})
	if !g.Go(func(ctx context.Context) {
		close(started)
		<-ctx.Done()
		time.Sleep(10 * time.Millisecond) // still running when Close waits
		done.Store(true)
	}) {
		t.Fatal("Go refused on an open group")
	}
	<-started
	var stopped bool
	g.Close(func() { stopped = true })
	if !done.Load() {
		t.Fatal("Close returned before the goroutine ended")
	}
	if !stopped {
		t.Fatal("stop step not run")
	}
	if g.Context().Err() == nil {
		t.Fatal("context not cancelled")
	}
}

func TestClosedRefusesAndCloseTwice(t *testing.T) {
	g := New()
	g.Close()
	g.Close() // must not panic or block
	if !g.Closed() {
		t.Fatal("not closed")
	}
	if g.Go(func(context.Context) { t.Error("ran after Close") }) {
		t.Fatal("Go started after Close")
	}
	if g.Enter() {
		t.Fatal("Enter counted after Close")
	}
}

func TestSecondCloseWaitsForFirst(t *testing.T) {
	g := New()
	inStop, release := make(chan struct{}), make(chan struct{})
	go g.Close(func() { close(inStop); <-release })
	<-inStop
	second := make(chan struct{})
	go func() { g.Close(); close(second) }()
	select {
	case <-second:
		t.Fatal("second Close returned while the first was still stopping")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-second:
	case <-time.After(5 * time.Second):
		t.Fatal("second Close did not return after the first finished")
	}
}
