package crdt

import (
	"fmt"
	"strconv"
	"sync"
	"time"
)

// Timestamp is a hybrid logical clock reading: the high 48 bits are
// milliseconds since the Unix epoch, the low 16 bits a logical counter that
// orders events within the same millisecond and events that observed a
// clock running ahead of ours. Timestamps compare as plain integers.
type Timestamp uint64

const logicalBits = 16

// Wall returns the physical part of t.
func (t Timestamp) Wall() time.Time {
	return time.UnixMilli(int64(t >> logicalBits)).UTC()
}

// Logical returns the logical counter of t.
func (t Timestamp) Logical() uint16 { return uint16(t) }

// String renders t as 16 lower-case hex digits, so that the string order is
// the numeric order (op ids embed it).
func (t Timestamp) String() string { return fmt.Sprintf("%016x", uint64(t)) }

// ParseTimestamp parses the 16 hex digit form produced by String.
func ParseTimestamp(s string) (Timestamp, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("parse timestamp %q: want 16 hex digits", s)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("parse timestamp %q: %w", s, err)
	}
	return Timestamp(v), nil
}

// TimestampOf returns the timestamp whose physical part is t.
func TimestampOf(t time.Time) Timestamp {
	return Timestamp(uint64(t.UnixMilli()) << logicalBits)
}

// Clock is a hybrid logical clock. Now never returns the same or a smaller
// value twice, and after Observe(t) every Now is greater than t, so an
// operation is always newer than every operation its writer had seen.
type Clock struct {
	mu   sync.Mutex
	last Timestamp
	now  func() time.Time
}

// NewClock returns a clock reading physical time from now (time.Now if nil),
// starting above last (the highest timestamp this node ever issued or saw).
func NewClock(now func() time.Time, last Timestamp) *Clock {
	if now == nil {
		now = time.Now
	}
	return &Clock{now: now, last: last}
}

// Now returns a new timestamp greater than every one issued or observed.
func (c *Clock) Now() Timestamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := TimestampOf(c.now())
	if t <= c.last {
		t = c.last + 1
	}
	c.last = t
	return t
}

// Observe records a timestamp seen on another node's operation.
func (c *Clock) Observe(t Timestamp) {
	c.mu.Lock()
	if t > c.last {
		c.last = t
	}
	c.mu.Unlock()
}

// Last returns the highest timestamp issued or observed.
func (c *Clock) Last() Timestamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}
