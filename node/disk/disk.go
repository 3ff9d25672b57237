// Package disk keeps a free-space reserve on a node's data dir filesystem:
// below the reserve, local writes (put, import, delete, resolve, schema,
// membership) are refused with ErrLow before anything is written, so that
// merges of peers' changes and repairs still have room.
//
// Reserve is the setting (config.yaml's disk_reserve, read by ParseReserve),
// Watch reads the filesystem's free space (Space, reported by status under
// "disk", see docs/json.md) and refuses writes under the reserve
// (CheckRoom, given to the crdt store as its room check).
package disk

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
)

// Reserve is the free space a node keeps on its data dir's filesystem:
// below it, local writes are refused with ErrLow. Either a byte count or a
// percentage of the filesystem; the smaller of the two when both are set.
// The zero Reserve keeps nothing.
type Reserve struct {
	Bytes   uint64
	Percent float64
}

// DefaultReserve is 1% of the filesystem, at most 256 MiB.
var DefaultReserve = Reserve{Bytes: 256 << 20, Percent: 1}

// ErrLow: the data dir's filesystem has less free space than the reserve.
var ErrLow = errors.New("disk almost full")

// ParseReserve reads "256MiB", "1%", "1%,256MiB" (the smaller of both) or
// "0" (no reserve).
func ParseReserve(s string) (Reserve, error) {
	var r Reserve
	s = strings.TrimSpace(s)
	if s == "" {
		return r, errors.New("empty disk reserve")
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if p, ok := strings.CutSuffix(part, "%"); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil || f < 0 || f > 50 {
				return Reserve{}, fmt.Errorf("disk reserve %q: want a percentage between 0%% and 50%%", part)
			}
			r.Percent = f
			continue
		}
		n, err := humanize.ParseBytes(part)
		if err != nil {
			return Reserve{}, fmt.Errorf("disk reserve %q: want a size like 256MiB, a percentage like 1%%, or 0", part)
		}
		r.Bytes = n
	}
	return r, nil
}

// String is the form ParseReserve reads.
func (r Reserve) String() string {
	switch {
	case r.Percent > 0 && r.Bytes > 0:
		return fmt.Sprintf("%g%%,%s", r.Percent, humanize.IBytes(r.Bytes))
	case r.Percent > 0:
		return fmt.Sprintf("%g%%", r.Percent)
	default:
		return humanize.IBytes(r.Bytes)
	}
}

// of returns the reserve in bytes on a filesystem of total bytes.
func (r Reserve) of(total uint64) uint64 {
	pct := uint64(r.Percent / 100 * float64(total))
	switch {
	case r.Percent > 0 && r.Bytes > 0:
		return min(pct, r.Bytes)
	case r.Percent > 0:
		return pct
	default:
		return r.Bytes
	}
}

// Space is what a node knows of its data dir's filesystem. Its JSON form is
// the "disk" object of status (docs/json.md).
type Space struct {
	Free    uint64 `json:"free"`
	Total   uint64 `json:"total"`
	Reserve uint64 `json:"reserve"`
	// Low: free space is under twice the reserve (status warns).
	Low bool `json:"low"`
	// Full: free space is under the reserve (local writes are refused).
	Full bool `json:"full"`
}

// space computes the figures of a filesystem of total bytes with free
// bytes available.
func (r Reserve) space(free, total uint64) Space {
	res := r.of(total)
	return Space{Free: free, Total: total, Reserve: res, Low: free < 2*res, Full: free < res}
}

// Watch reads the free space of a directory's filesystem, at most once
// every 250 ms (statfs is cheap, but writes come by the thousand in
// imports). It is safe for concurrent use.
type Watch struct {
	dir     string
	reserve Reserve
	mu      sync.Mutex
	at      time.Time
	last    Space
	err     error
}

// NewWatch watches the filesystem of dir and keeps reserve free on it.
func NewWatch(dir string, reserve Reserve) *Watch {
	return &Watch{dir: dir, reserve: reserve}
}

const watchInterval = 250 * time.Millisecond

// Space returns the current figures (cached for 250 ms).
func (w *Watch) Space() (Space, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.at.IsZero() && time.Since(w.at) < watchInterval {
		return w.last, w.err
	}
	var st syscall.Statfs_t
	w.at = time.Now()
	if err := syscall.Statfs(w.dir, &st); err != nil {
		w.err = fmt.Errorf("free space of %s: %w", w.dir, err)
		return Space{}, w.err
	}
	w.last = w.reserve.space(st.Bavail*uint64(st.Bsize), st.Blocks*uint64(st.Bsize))
	w.err = nil
	return w.last, nil
}

// CheckRoom refuses a local write, with an error wrapping ErrLow, when the
// free space is under the reserve. When the free space cannot be read it
// lets the write try (nil).
func (w *Watch) CheckRoom(context.Context) error {
	sp, err := w.Space()
	if err != nil {
		return nil // cannot tell: let the write try
	}
	if sp.Full {
		return fmt.Errorf("%w: %s free on the disk of %s, under the reserve of %s kept for merges and repairs (free some space, or lower disk_reserve in config.yaml)",
			ErrLow, humanize.IBytes(sp.Free), w.dir, humanize.IBytes(sp.Reserve))
	}
	return nil
}

// FaultFullEnv names an environment variable for tests and the fault
// harness: when it holds a path, every write to the node's store fails
// with "no space left on device" while a file exists at that path.
const FaultFullEnv = "FERRY_FAULT_DISK_FULL"
