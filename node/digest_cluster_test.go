package node

import (
	"context"
	"testing"
)

func TestClusterDiffIdenticalAndDiverged(t *testing.T) {
	c := newCluster(t, 1)
	ctx := context.Background()
	office, laptop := c.nodes[0], c.nodes[1]
	put(t, office, "c1", map[string]any{"last_name": "Smith"})
	c.waitConverged()
	res, err := laptop.Diff(ctx, office.ID())
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
		if err := n.heads.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := laptop.bcast.Close(); err != nil {
		t.Fatal(err)
	}
	put(t, office, "c2", map[string]any{"last_name": "Only at the office"})
	put(t, office, "c1", map[string]any{"first_name": "Changed at the office"})
	put(t, laptop, "c3", map[string]any{"last_name": "Only on the laptop"})
	res, err = laptop.Diff(ctx, office.ID())
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
	back, err := office.Diff(ctx, laptop.ID())
	if err != nil {
		t.Fatal(err)
	}
	if back.Identical || back.Digest != res.PeerDigest || back.PeerDigest != res.Digest {
		t.Errorf("office's view: %+v", back)
	}
	_, peers, err := laptop.SyncState(ctx)
	if err != nil || len(peers) != 1 || peers[0].InSync {
		t.Errorf("sync state: %+v %v", peers, err)
	}
}
