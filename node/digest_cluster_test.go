package node

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
)

func TestClusterDiffIdenticalAndDiverged(t *testing.T) {
	c := newCluster(t, 1)
	ctx := context.Background()
	office, laptop := c.nodes[0], c.nodes[1]
	put(t, office, "c1", map[string]any{"last_name": "Smith"})
	c.waitConverged()
	res, err := laptop.Diff(ctx, office.ID().String())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Identical || len(res.Records) != 0 || res.Digest != res.PeerDigest {
		t.Fatalf("converged nodes: %+v", res)
	}
	if st := laptop.Status(ctx); st.Digest != res.Digest {
		t.Errorf("status digest %s, diff digest %s", st.Digest, res.Digest)
	}

	// Cut replication between them but keep the connection: the laptop no
	// longer receives heads, the digest protocol still answers.
	for _, n := range c.nodes {
		if err := n.net.heads.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := laptop.net.bcast.Close(); err != nil {
		t.Fatal(err)
	}
	put(t, office, "c2", map[string]any{"last_name": "Only at the office"})
	put(t, office, "c1", map[string]any{"first_name": "Changed at the office"})
	put(t, laptop, "c3", map[string]any{"last_name": "Only on the laptop"})
	res, err = laptop.Diff(ctx, office.ID().String())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]bool{"c1": {true, true}, "c2": {false, true}, "c3": {true, false}}
	got := map[string][2]bool{}
	for _, r := range res.Records {
		if r.Collection == "contacts" {
			got[r.ID] = [2]bool{r.Here, r.There}
		}
	}
	if res.Identical || len(got) != len(want) {
		t.Fatalf("diverged nodes: %+v", res)
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("%s: here/there %v, want %v", id, got[id], w)
		}
	}
	// The other direction sees the same records.
	back, err := office.Diff(ctx, laptop.ID().String())
	if err != nil {
		t.Fatal(err)
	}
	if back.Identical || back.Digest != res.PeerDigest || back.PeerDigest != res.Digest {
		t.Errorf("office's view: %+v", back)
	}
	st, err := laptop.SyncState(ctx)
	if err != nil || len(st.Peers) != 1 || st.Peers[0].InSync {
		t.Errorf("sync state: %+v %v", st, err)
	}
}

func TestClusterUnackedEditsCountWhatTheOfficeHolds(t *testing.T) {
	c := newCluster(t, 1)
	ctx := context.Background()
	laptop := c.nodes[1]
	put(t, laptop, "c1", map[string]any{"last_name": "Smith"})
	c.waitConverged()
	testnet.WaitFor(t, 10*time.Second, func() bool {
		u, err := laptop.acks.unacked(ctx)
		return err == nil && u.Known && u.Count == 0
	})
	c.setOffline(true, 1)
	c.nodes[1].clock.Set(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	put(t, laptop, "c2", map[string]any{"last_name": "One", "first_name": "A"}) // one write of two fields
	c.nodes[1].clock.Set(time.Date(2026, 3, 2, 11, 0, 0, 0, time.UTC))
	put(t, laptop, "c1", map[string]any{"phone": "555"})
	u := laptop.Status(ctx).Unacked
	if u == nil || !u.Known || u.Count != 2 || !u.Oldest.Equal(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("offline: unacked %+v, want 2 edits, the oldest at 10:00", u)
	}
	c.setOffline(false, 1)
	c.waitConverged()
	testnet.WaitFor(t, 10*time.Second, func() bool {
		u := laptop.Status(ctx).Unacked
		return u != nil && u.Count == 0
	})
	if u := c.nodes[0].Status(ctx).Unacked; u == nil || u.Count != 0 {
		t.Errorf("the office itself: %+v", u)
	}
}

func TestClusterMetrics(t *testing.T) {
	c := newCluster(t, 1)
	put(t, c.nodes[1], "c1", map[string]any{"last_name": "Smith"})
	c.waitConverged()
	scrape := func() string {
		rec := httptest.NewRecorder()
		c.nodes[1].Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	// The office acknowledges the edit when it next announces its heads.
	testnet.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(scrape(), "ferry_unacked_edits 0") })
	body := scrape()
	office := c.nodes[0].ID().String()
	for _, want := range []string{"ferry_dag_height ", "ferry_heads 1", "ferry_online 1", "ferry_connected_peers 1",
		"ferry_unacked_edits 0", `ferry_seconds_since_last_sync{peer="` + office + `"}`,
		`ferry_peer_received_bytes_total{peer="` + office + `"}`, "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
