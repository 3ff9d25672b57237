package node

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/schema"
)

// Two programs embedding Ferry, each with a data dir made by Init, open
// them with the network: an edit on one shows on the other, and the
// other's Watch reports it.
func TestOpenWithNetworkReplicatesAndWatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := t.TempDir()
	loopback := []string{"/ip4/127.0.0.1/tcp/0"}
	dirA, dirB := filepath.Join(root, "a"), filepath.Join(root, "b")
	if _, _, err := Init(dirA, InitOptions{Name: "a", Listen: loopback}); err != nil {
		t.Fatal(err)
	}
	a, err := Open(ctx, dirA, OpenOptions{Network: true, Logger: testnet.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	peers := []string{a.Addrs()[0].String()}
	if _, _, err := Init(dirB, InitOptions{Name: "b", Listen: loopback, Peers: peers}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Init(dirB, InitOptions{}); err == nil {
		t.Fatal("Init of an initialised dir succeeded")
	}
	s, err := datadir.ReadSettings(dirB)
	if err != nil || s.Name != "b" || len(s.Peers) != 1 || s.Role != RoleLaptop {
		t.Fatalf("settings of b: %+v, %v", s, err)
	}
	b, err := Open(ctx, dirB, OpenOptions{Network: true, Logger: testnet.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	changes := b.Watch(ctx)

	sc, err := schema.Parse([]byte("collections:\n  contacts:\n    fields:\n      last_name: {type: string}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Store().ApplySchema(ctx, sc); err != nil {
		t.Fatal(err)
	}
	testnet.WaitFor(t, 30*time.Second, func() bool {
		_, err := b.Store().Collection(ctx, "contacts")
		return err == nil
	})
	if _, err := a.Store().Put(ctx, "contacts", "c1", map[string]any{"last_name": "Rodman"}); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case c := <-changes:
			if c.Collection != "contacts" || c.ID != "c1" {
				continue // the schema's own changes are internal: never reported
			}
			rec, err := b.Store().Get(ctx, "contacts", "c1")
			if err != nil || rec.Values()["last_name"] != "Rodman" {
				t.Fatalf("b after the change: %v, %v", rec, err)
			}
			if st := b.Status(ctx); !st.Running || st.ConnectedPeers != 1 {
				t.Errorf("b's status: running %v, %d peers", st.Running, st.ConnectedPeers)
			}
			return
		case <-ctx.Done():
			t.Fatal("b's Watch did not report a's edit")
		}
	}
}

// A closed Watch context closes its channel.
func TestWatchCloses(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	n, err := Open(context.Background(), dir, OpenOptions{Logger: testnet.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ch := n.Watch(ctx)
	cancel()
	select {
	case _, open := <-ch:
		if open {
			t.Fatal("a change arrived with nothing written")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the channel stayed open after its context ended")
	}
}
