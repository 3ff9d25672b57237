package node

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

// DiskReserve is the free space a node keeps on its data dir's filesystem:
// below it, local writes (put, import, delete, resolve, schema, membership)
// are refused with ErrDiskLow before anything is written, so that merges of
// peers' changes and repairs still have room. Either a byte count or a
// percentage of the filesystem; the smaller of the two when both are set.
type DiskReserve struct {
	Bytes   uint64
	Percent float64
}

// DefaultDiskReserve is 1% of the filesystem, at most 256 MiB.
var DefaultDiskReserve = DiskReserve{Bytes: 256 << 20, Percent: 1}

// ErrDiskLow: the data dir's filesystem has less free space than the
// reserve.
var ErrDiskLow = errors.New("disk almost full")

// ParseDiskReserve reads "256MiB", "1%", "1%,256MiB" (the smaller of both)
// or "0" (no reserve).
func ParseDiskReserve(s string) (DiskReserve, error) {
	var r DiskReserve
	s = strings.TrimSpace(s)
	if s == "" {
		return r, errors.New("empty disk reserve")
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if p, ok := strings.CutSuffix(part, "%"); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil || f < 0 || f > 50 {
				return DiskReserve{}, fmt.Errorf("disk reserve %q: want a percentage between 0%% and 50%%", part)
			}
			r.Percent = f
			continue
		}
		n, err := humanize.ParseBytes(part)
		if err != nil {
			return DiskReserve{}, fmt.Errorf("disk reserve %q: want a size like 256MiB, a percentage like 1%%, or 0", part)
		}
		r.Bytes = n
	}
	return r, nil
}

// String is the form ParseDiskReserve reads.
func (r DiskReserve) String() string {
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
func (r DiskReserve) of(total uint64) uint64 {
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

// DiskSpace is what a node knows of its data dir's filesystem.
type DiskSpace struct {
	Free    uint64 `json:"free"`
	Total   uint64 `json:"total"`
	Reserve uint64 `json:"reserve"`
	// Low: free space is under twice the reserve (status warns).
	Low bool `json:"low"`
	// Full: free space is under the reserve (local writes are refused).
	Full bool `json:"full"`
}

// diskWatch reads the free space of dir's filesystem, at most once every
// interval (statfs is cheap, but writes come by the thousand in imports).
type diskWatch struct {
	dir     string
	reserve DiskReserve
	mu      sync.Mutex
	at      time.Time
	last    DiskSpace
	err     error
}

func newDiskWatch(dir string, reserve DiskReserve) *diskWatch {
	return &diskWatch{dir: dir, reserve: reserve}
}

const diskWatchInterval = 250 * time.Millisecond

// space returns the current figures (cached for diskWatchInterval).
func (w *diskWatch) space() (DiskSpace, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.at.IsZero() && time.Since(w.at) < diskWatchInterval {
		return w.last, w.err
	}
	var st syscall.Statfs_t
	w.at = time.Now()
	if err := syscall.Statfs(w.dir, &st); err != nil {
		w.err = fmt.Errorf("free space of %s: %w", w.dir, err)
		return DiskSpace{}, w.err
	}
	total := st.Blocks * uint64(st.Bsize)
	free := st.Bavail * uint64(st.Bsize)
	res := w.reserve.of(total)
	w.last = DiskSpace{Free: free, Total: total, Reserve: res, Low: free < 2*res, Full: free < res}
	w.err = nil
	return w.last, nil
}

// checkRoom refuses a local write when the free space is under the reserve.
func (w *diskWatch) checkRoom(context.Context) error {
	sp, err := w.space()
	if err != nil {
		return nil // cannot tell: let the write try
	}
	if sp.Full {
		return fmt.Errorf("%w: %s free on the disk of %s, under the reserve of %s kept for merges and repairs (free some space, or lower disk_reserve in config.yaml)",
			ErrDiskLow, humanize.IBytes(sp.Free), w.dir, humanize.IBytes(sp.Reserve))
	}
	return nil
}

// FaultDiskFullEnv names an environment variable for tests and the fault
// harness: when it holds a path, every write to the node's store fails
// with "no space left on device" while a file exists at that path.
const FaultDiskFullEnv = "FERRY_FAULT_DISK_FULL"
