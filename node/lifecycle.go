package node

import "sync"

// lifecycle is what a component that starts goroutines (stream handlers,
// exchanges) needs to shut down: a closed flag and a WaitGroup of those
// goroutines, under mu so that none starts after Close began. mu may guard
// more of the component's state.
type lifecycle struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// enter counts one more goroutine, unless the component is closed. The
// caller calls wg.Done when it ends.
func (l *lifecycle) enter() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.wg.Add(1)
	return true
}

// shut marks the component closed, calls stop (which cancels what runs) and
// waits for every goroutine counted by enter.
func (l *lifecycle) shut(stop func()) {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	stop()
	l.wg.Wait()
}
