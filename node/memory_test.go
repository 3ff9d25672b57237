package node

import (
	"context"
	"encoding/json"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/datadir"
)

func TestParseMemoryLimit(t *testing.T) {
	for in, want := range map[string]int64{
		"512MiB": 512 << 20, "1GiB": 1 << 30, " 300 MiB ": 300 << 20, "100MB": 100_000_000,
		"0": 0, "off": 0, "OFF": 0,
	} {
		if got, err := ParseMemoryLimit(in); err != nil || got != want {
			t.Errorf("ParseMemoryLimit(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-1GiB", "512", "10MiB", "1.5"} {
		if got, err := ParseMemoryLimit(in); err == nil {
			t.Errorf("ParseMemoryLimit(%q) = %d, no error", in, got)
		}
	}
}

// config.yaml's memory_limit reaches Config.MemoryLimit; absent, the
// default; a bad value is an error naming the key.
func TestConfigMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	for in, want := range map[string]int64{"": DefaultMemoryLimit, "512MiB": 512 << 20, "off": 0} {
		cfg, err := ConfigFromSettings(dir, &datadir.Settings{Role: RoleLaptop, MemoryLimit: in})
		if err != nil || cfg.MemoryLimit != want {
			t.Errorf("memory_limit %q: %d, %v; want %d", in, cfg.MemoryLimit, err, want)
		}
	}
	_, err := ConfigFromSettings(dir, &datadir.Settings{Role: RoleLaptop, MemoryLimit: "lots"})
	if err == nil || !strings.Contains(err.Error(), "memory_limit") || !strings.Contains(err.Error(), `"lots"`) {
		t.Errorf("memory_limit lots: %v; want an error naming the key and the value", err)
	}
}

// A running node sets its memory limit (unless GOMEMLIMIT is set), and its
// status reports the process's memory: on Linux its RSS and peak, always
// its Go heap and the limit in force.
func TestStatusMemory(t *testing.T) {
	ctx := context.Background()
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) }) // process-wide
	cfg := TestConfig(t.TempDir())
	cfg.Offline = true
	cfg.Logger = testnet.Logger()
	cfg.MemoryLimit = 3 << 30
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	data, err := json.Marshal(n.Status(ctx))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Memory *struct {
			RSS   uint64 `json:"rss_bytes"`
			Peak  uint64 `json:"peak_rss_bytes"`
			Heap  uint64 `json:"heap_bytes"`
			Limit uint64 `json:"limit_bytes"`
		} `json:"memory"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	m := st.Memory
	if m == nil {
		t.Fatalf("no memory in the status of a running node: %s", data)
	}
	if runtime.GOOS == "linux" && (m.RSS == 0 || m.Peak < m.RSS) {
		t.Errorf("rss_bytes %d, peak_rss_bytes %d: want RSS > 0 and peak >= RSS", m.RSS, m.Peak)
	}
	if m.Heap == 0 {
		t.Error("heap_bytes 0")
	}
	want := uint64(3 << 30)
	if os.Getenv("GOMEMLIMIT") != "" {
		want = uint64(prev) // the environment wins
	}
	if m.Limit != want {
		t.Errorf("limit_bytes %d, want %d", m.Limit, want)
	}
}

// Without a running node (the CLI opened the store), the process is the
// command's: no memory in the status.
func TestStatusMemoryNotRunning(t *testing.T) {
	ctx := context.Background()
	cfg := TestConfig(t.TempDir())
	cfg.Network = false
	cfg.Logger = testnet.Logger()
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if st := n.Status(ctx); st.Memory != nil {
		t.Errorf("memory %+v in the status of a store without a running node", st.Memory)
	}
}

func TestProcStatusKB(t *testing.T) {
	data := []byte("Name:\tferry\nVmHWM:\t  212000 kB\nVmRSS:\t   84000 kB\nThreads:\t9\n")
	if got := procStatusKB(data, "VmRSS:"); got != 84000<<10 {
		t.Errorf("VmRSS: %d", got)
	}
	if got := procStatusKB(data, "VmHWM:"); got != 212000<<10 {
		t.Errorf("VmHWM: %d", got)
	}
	if got := procStatusKB(data, "VmSwap:"); got != 0 {
		t.Errorf("absent VmSwap: %d", got)
	}
}
