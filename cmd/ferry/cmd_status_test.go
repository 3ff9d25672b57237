package main

import (
	"runtime"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
)

func TestMemoryLine(t *testing.T) {
	for _, c := range []struct {
		m    apijson.Memory
		want string
	}{
		{apijson.Memory{RSS: 84 << 20, PeakRSS: 212 << 20, Heap: 40 << 20, Limit: 256 << 20},
			"84 MiB resident (peak 212 MiB), Go heap 40 MiB, limit 256 MiB"},
		{apijson.Memory{RSS: 84 << 20, PeakRSS: 84 << 20, Heap: 40 << 20},
			"84 MiB resident (peak 84 MiB), Go heap 40 MiB, no limit"},
		{apijson.Memory{Heap: 40 << 20, Limit: 1 << 30}, // no /proc
			"Go heap 40 MiB, limit 1.0 GiB"},
	} {
		if got := memoryLine(&c.m); got != c.want {
			t.Errorf("memoryLine(%+v) = %q, want %q", c.m, got, c.want)
		}
	}
}

// TestStatusMemory: a running node's status shows its memory (RSS and peak
// on Linux) and the limit from config.yaml's memory_limit, or from
// GOMEMLIMIT, which wins; without a running node there is none; a bad
// memory_limit is refused, naming the key.
func TestStatusMemory(t *testing.T) {
	e2e(t)
	dir := initDir(t, t.TempDir(), "laptop", "--listen", "/ip4/127.0.0.1/tcp/0")
	appendConfig(t, dir, "memory_limit: 300MiB\n")

	n := startNode(t, dir, "GOMEMLIMIT=")
	st := mustStatus(t, dir)
	m := st.Memory
	if m == nil {
		t.Fatalf("no memory in the status of a running node: %+v", st)
	}
	if runtime.GOOS == "linux" && (m.RSS == 0 || m.PeakRSS < m.RSS) {
		t.Errorf("rss_bytes %d, peak_rss_bytes %d: want RSS > 0 and peak >= RSS", m.RSS, m.PeakRSS)
	}
	if m.Heap == 0 || m.Limit != 300<<20 {
		t.Errorf("heap_bytes %d, limit_bytes %d: want a heap and memory_limit's 300 MiB", m.Heap, m.Limit)
	}
	if r := mustFerry(t, dir, "status"); !strings.Contains(r.Stdout, "memory:") || !strings.Contains(r.Stdout, "limit 300 MiB") {
		t.Errorf("status does not show the memory and its limit:\n%s", r)
	}
	n.stop()

	if st := mustStatus(t, dir); st.Memory != nil {
		t.Errorf("memory %+v without a running node (it would be the command's)", st.Memory)
	}
	if r := mustFerry(t, dir, "status"); strings.Contains(r.Stdout, "memory:") {
		t.Errorf("status shows memory without a running node:\n%s", r)
	}

	n = startNode(t, dir, "GOMEMLIMIT=400MiB")
	if m := mustStatus(t, dir).Memory; m == nil || m.Limit != 400<<20 {
		t.Errorf("memory with GOMEMLIMIT=400MiB: %+v; want its limit", m)
	}
	n.stop()

	s, err := datadir.ReadSettings(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.MemoryLimit = "lots"
	if err := s.Write(dir); err != nil {
		t.Fatal(err)
	}
	if r := ferry(t, dir, "status"); r.Code == 0 || !strings.Contains(r.Stderr, `memory_limit "lots"`) {
		t.Errorf("status with a bad memory_limit: want an error naming the key:\n%s", r)
	}
}
