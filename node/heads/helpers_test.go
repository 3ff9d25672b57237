package heads

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/ferry-crm/ferry/internal/testnet"
	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

func mustEncode(t testing.TB, heads []cid.Cid) []byte {
	t.Helper()
	data, err := Encode(heads)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func sameCids(a, b []cid.Cid) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equals(b[i]) {
			return false
		}
	}
	return true
}

// recorder records what a Config.Receive gets.
type recorder struct {
	mu  sync.Mutex
	got map[peer.ID][][]cid.Cid
}

func newRecorder() *recorder { return &recorder{got: make(map[peer.ID][][]cid.Cid)} }

func (r *recorder) receive(t testing.TB) func(context.Context, peer.ID, []byte) {
	return func(_ context.Context, from peer.ID, payload []byte) {
		heads, err := Decode(payload)
		if err != nil {
			t.Errorf("Receive got an invalid payload: %v", err)
			return
		}
		r.mu.Lock()
		r.got[from] = append(r.got[from], heads)
		r.mu.Unlock()
	}
}

func (r *recorder) count(from peer.ID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got[from])
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.got {
		n += len(v)
	}
	return n
}

func (r *recorder) last(from peer.ID) []cid.Cid {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.got[from]
	if len(l) == 0 {
		return nil
	}
	return l[len(l)-1]
}

// mutableHeads is a Config.Heads whose answer the test changes.
type mutableHeads struct {
	mu    sync.Mutex
	heads []cid.Cid
	err   error
}

func (m *mutableHeads) set(heads []cid.Cid) {
	m.mu.Lock()
	m.heads = heads
	m.mu.Unlock()
}

func (m *mutableHeads) get(context.Context) ([]cid.Cid, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.heads, m.err
}

func fixedHeads(heads []cid.Cid) func(context.Context) ([]cid.Cid, error) {
	return func(context.Context) ([]cid.Cid, error) { return heads, nil }
}

// newTestService starts a Service with fixed heads, Receive recording into
// rec, no periodic exchange and no fallback heads check (unless cfg says
// otherwise), closed at cleanup.
func newTestService(t testing.TB, h host.Host, cfg Config, rec *recorder, log *slog.Logger) *Service {
	t.Helper()
	if log == nil {
		log = testnet.Logger()
	}
	if cfg.Receive == nil && rec != nil {
		cfg.Receive = rec.receive(t)
	}
	if cfg.AnnounceCheck == 0 {
		cfg.AnnounceCheck = -1
	}
	s := New(h, cfg, log)
	t.Cleanup(func() { _ = s.Close() })
	return s
}
