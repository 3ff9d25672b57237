package node

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"

	"github.com/ferry-crm/ferry/node/apijson"
)

// DefaultMemoryLimit is the Go soft memory limit a node sets by default:
// above the live heap of a node holding ~100,000 contacts with badger tuned
// as it is (datadir.OpenStore), low enough that Go returns the memory an
// import churned through instead of keeping it (docs/storage.md).
const DefaultMemoryLimit = 256 << 20

// minMemoryLimit is the lowest memory_limit accepted: under it the node
// would spend its time collecting garbage.
const minMemoryLimit = 64 << 20

// ParseMemoryLimit reads config.yaml's memory_limit: a size ("512MiB",
// "1GiB"; go-humanize's units: MiB binary, MB decimal) of at least 64 MiB,
// or "0" or "off" for none (0 in Config.MemoryLimit).
func ParseMemoryLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "0" || strings.EqualFold(s, "off") {
		return 0, nil
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n > math.MaxInt64 {
		return 0, fmt.Errorf("%q: want a size like 512MiB, or off", s)
	}
	if n < minMemoryLimit {
		return 0, fmt.Errorf("%q: under the minimum of %s (a node needs more to run; off for no limit)", s, humanize.IBytes(minMemoryLimit))
	}
	return int64(n), nil
}

// goMemLimitEnv is the Go runtime's own setting; when set, it wins.
const goMemLimitEnv = "GOMEMLIMIT"

// applyMemoryLimit sets the process's Go soft memory limit (it is
// process-wide: the last node started sets it) to limit bytes, unless
// GOMEMLIMIT is set in the environment (the runtime applied it; it wins)
// or limit is 0 (the process's limit is left as it is).
func applyMemoryLimit(limit int64, log *slog.Logger) {
	if env := os.Getenv(goMemLimitEnv); env != "" {
		log.Info("memory limit from the environment", goMemLimitEnv, env)
		return
	}
	if limit <= 0 {
		return
	}
	debug.SetMemoryLimit(limit)
	log.Debug("memory limit", "limit", humanize.IBytes(uint64(limit)))
}

// memoryStatus reads the process's memory: RSS and peak RSS from
// /proc/self/status (Linux; left out elsewhere), the Go heap in use and the
// memory limit in force (left out when there is none).
func memoryStatus() *apijson.Memory {
	m := &apijson.Memory{}
	if data, err := os.ReadFile("/proc/self/status"); err == nil {
		m.RSS, m.PeakRSS = procStatusKB(data, "VmRSS:"), procStatusKB(data, "VmHWM:")
	}
	// HeapInuse of runtime.MemStats without stopping the world: spans
	// holding objects, and their free slots.
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	metrics.Read(s)
	for _, v := range s {
		if v.Value.Kind() == metrics.KindUint64 {
			m.Heap += v.Value.Uint64()
		}
	}
	if l := debug.SetMemoryLimit(-1); l > 0 && l < math.MaxInt64 {
		m.Limit = uint64(l)
	}
	return m
}

// procStatusKB returns the value in bytes of a "Key:   123 kB" line of
// /proc/<pid>/status, 0 when absent.
func procStatusKB(data []byte, key string) uint64 {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), key)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0
		}
		return n << 10
	}
	return 0
}
