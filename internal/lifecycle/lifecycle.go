// Package lifecycle is the one start-and-stop pattern of Ferry's long-lived
// components: a constructor creates a Group and starts the component's
// goroutines with Go (or counts a callback that runs on another goroutine
// with Enter and Leave); the component's Close calls Group.Close, which
// marks it closed, cancels its context, runs the component's own stop steps
// and waits for every goroutine it counted. Close is safe to call twice:
// later calls wait for the first to finish.
package lifecycle

import (
	"context"
	"sync"
)

// Group tracks a component's goroutines. The zero value is not usable:
// make one with New.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	mu     sync.Mutex // closed vs wg.Add
	closed bool
	wg     sync.WaitGroup
}

// New returns an open Group whose context is cancelled by Close.
func New() *Group {
	ctx, cancel := context.WithCancel(context.Background())
	return &Group{ctx: ctx, cancel: cancel}
}

// Context is cancelled when Close begins.
func (g *Group) Context() context.Context { return g.ctx }

// Go runs fn on a new goroutine with the Group's context, unless the Group
// is closed; it reports whether fn was started.
func (g *Group) Go(fn func(ctx context.Context)) bool {
	if !g.Enter() {
		return false
	}
	go func() {
		defer g.Leave()
		fn(g.ctx)
	}()
	return true
}

// Enter counts one more running goroutine (a stream handler, a callback),
// unless the Group is closed. The caller calls Leave when it ends.
func (g *Group) Enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

// Leave ends what Enter counted.
func (g *Group) Leave() { g.wg.Done() }

// Closed reports whether Close has begun.
func (g *Group) Closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// Close marks the Group closed (Go and Enter refuse from now on), cancels
// its context, runs stop in order (what the component must undo for its
// goroutines to return: unregister handlers, close subscriptions) and
// waits for every goroutine counted. Safe to call more than once; later
// calls return once the first has finished.
func (g *Group) Close(stop ...func()) {
	g.once.Do(func() {
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		g.cancel()
		for _, f := range stop {
			f()
		}
		g.wg.Wait()
	})
}
