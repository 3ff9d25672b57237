package main

import (
	"runtime"
	"strings"
	"testing"
	"time"

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

func TestWriteEpoch(t *testing.T) {
	at := time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)
	office := "12D3KooWOfficeOfficeOfficeAbCdEfGh"
	for _, c := range []struct {
		name string
		e    apijson.Epoch
		self string
		want string
	}{
		{"first epoch", apijson.Epoch{Epoch: "0"}, "me",
			"epoch:\t0 (the first: never compacted)\n"},
		{"started by another office", apijson.Epoch{Epoch: "2-ab12cd34ef567890", Number: 2, StartedAt: at, StartedBy: office}, "me",
			"epoch:\t2-ab12cd34ef567890, since 2026-03-01T09:30:00Z, started by office (…AbCdEfGh)\n"},
		{"started here", apijson.Epoch{Epoch: "2-ab12cd34ef567890", Number: 2, StartedAt: at, StartedBy: office}, office,
			"epoch:\t2-ab12cd34ef567890, since 2026-03-01T09:30:00Z, started by this node\n"},
		{"moving", apijson.Epoch{Epoch: "0", Later: "1-0011223344556677", Adopting: true}, "me",
			"epoch:\t0 (the first: never compacted)\n\tmoving to epoch 1-0011223344556677 now\n"},
		{"heard of a later one, last move failed", apijson.Epoch{Epoch: "0", Later: "1-0011223344556677", LastError: "adopt: no heads"}, "me",
			"epoch:\t0 (the first: never compacted)\n\ta peer is in a later epoch 1-0011223344556677: this node moves to it as soon as it can\n" +
				"\tthe last move to a later epoch failed (tried again by itself): adopt: no heads\n"},
	} {
		var b strings.Builder
		writeEpoch(&b, &c.e, c.self, map[string]string{office: "office"})
		if b.String() != c.want {
			t.Errorf("%s: writeEpoch printed\n%q\nwant\n%q", c.name, b.String(), c.want)
		}
	}
}

func TestEpochRelation(t *testing.T) {
	for _, c := range []struct{ ours, theirs, want string }{
		{"2-ab12cd34ef567890", "", ""},
		{"", "2-ab12cd34ef567890", ""},
		{"2-ab12cd34ef567890", "2-ab12cd34ef567890", ""},
		{"0", "0", ""},
		{"0", "1-0011223344556677", "1-00112233… (later: this node moves to it)"},
		{"2-ab12cd34ef567890", "1-0011223344556677", "1-00112233… (earlier: it will move to ours)"},
		{"2-ab12cd34ef567890", "0", "0 (earlier: it will move to ours)"},
		// Two offices compacted the same epoch at once: the larger id wins.
		{"2-ab12cd34ef567890", "2-ff12cd34ef567890", "2-ff12cd34… (later: this node moves to it)"},
		{"2-ab12cd34ef567890", "what", "what"},
	} {
		if got := epochRelation(c.ours, c.theirs); got != c.want {
			t.Errorf("epochRelation(%q, %q) = %q, want %q", c.ours, c.theirs, got, c.want)
		}
	}
}
