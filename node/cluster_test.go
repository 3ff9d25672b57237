package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/multiformats/go-multiaddr"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/schema"
)

// Multi-node tests: real nodes with real libp2p hosts on loopback, an office
// and laptops that dial it, exactly as `ferry node` runs them.

const clusterSchema = `
collections:
  contacts:
    fields:
      first_name: {type: string}
      last_name:  {type: string, required: true}
      phone:      {type: string}
`

type settableClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *settableClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *settableClock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

type clusterNode struct {
	*Node
	dir   string
	clock *settableClock
	cfg   Config
}

type cluster struct {
	t     *testing.T
	nodes []*clusterNode // nodes[0] is the office
	// psk and founder make the cluster a private network founded by the
	// office; laptops are enrolled by the office before they start.
	psk     pnet.PSK
	founder string
	// officeLog keeps the office's log records.
	officeLog *testnet.LogRecorder
}

func nodeConfig(t *testing.T, dir, name, role string, peers []multiaddr.Multiaddr, clock *settableClock) Config {
	cfg := TestConfig(dir) // no mDNS: clusters of parallel tests must not find each other
	cfg.Name, cfg.Role, cfg.Peers = name, role, peers
	cfg.Store.Now = clock.Now
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})).With("node", name)
	return cfg
}

// newCluster starts an office and n laptops, applies the schema on the
// office and waits until every node has it.
func newCluster(t *testing.T, laptops int) *cluster {
	t.Helper()
	return newClusterWith(t, laptops, clusterSchema, nil)
}

// newClusterWith is newCluster with another schema and, on the office, a
// conflict hook.
func newClusterWith(t *testing.T, laptops int, schemaYAML string, hook *HookConfig) *cluster {
	t.Helper()
	c := &cluster{t: t, officeLog: &testnet.LogRecorder{}}
	psk, err := datadir.NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	c.psk = psk
	start := func(name, role string, peers []multiaddr.Multiaddr) {
		clock := &settableClock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
		dir := filepath.Join(t.TempDir(), name)
		cfg := c.enrol(dir, name, role, peers, clock)
		if role == RoleOffice {
			cfg.ConflictHook = hook
			cfg.Logger = slog.New(c.officeLog)
		}
		n, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, &clusterNode{Node: n, dir: dir, clock: clock, cfg: cfg})
	}
	start("office", RoleOffice, nil)
	for i := range laptops {
		start(fmt.Sprintf("laptop%d", i+1), RoleLaptop, c.nodes[0].Addrs()[:1])
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			if err := n.Close(); err != nil {
				t.Error(err)
			}
		}
	})
	sc, err := schema.Parse([]byte(schemaYAML))
	if err != nil {
		t.Fatal(err)
	}
	if _, err = c.nodes[0].Store().ApplySchema(context.Background(), sc); err != nil {
		t.Fatal(err)
	}
	c.waitConverged()
	return c
}

// enrol returns the config of a node of the cluster's network in dir:
// with the swarm key and the founder; the first office founds the network,
// any other node is enrolled by the office (which must be running).
func (c *cluster) enrol(dir, name, role string, peers []multiaddr.Multiaddr, clock *settableClock) Config {
	c.t.Helper()
	cfg := nodeConfig(c.t, dir, name, role, peers, clock)
	key, err := datadir.LoadOrCreateIdentity(filepath.Join(dir, datadir.IdentityFile))
	if err != nil {
		c.t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.founder == "" {
		c.founder = id.String()
	} else if err := c.nodes[0].Store().AddMember(context.Background(), id.String(), name, role); err != nil {
		c.t.Fatal(err)
	}
	cfg.SwarmKey, cfg.Founder = c.psk, c.founder
	return cfg
}

// restart closes node i and starts it again on the same data dir.
func (c *cluster) restart(i int) {
	c.t.Helper()
	n := c.nodes[i]
	if err := n.Close(); err != nil {
		c.t.Fatal(err)
	}
	n2, err := Start(context.Background(), n.cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.nodes[i] = &clusterNode{Node: n2, dir: n.dir, clock: n.clock, cfg: n.cfg}
}

func (c *cluster) online() []*clusterNode {
	var out []*clusterNode
	for _, n := range c.nodes {
		if !n.Offline() {
			out = append(out, n)
		}
	}
	return out
}

// visible renders a node's contacts, conflicts included.
func visible(t *testing.T, n *clusterNode) string {
	var out []string
	err := n.Store().List(context.Background(), "contacts", func(r *crdt.Record) error {
		var fields []string
		for name, f := range r.Fields {
			s := fmt.Sprintf("%s=%v", name, f.Value)
			for _, cand := range f.Candidates {
				s += fmt.Sprintf("|%v", cand.Value)
			}
			fields = append(fields, s)
		}
		sort.Strings(fields)
		out = append(out, r.ID+"{"+strings.Join(fields, " ")+"}")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, " ")
}

func headsOf(n *clusterNode) string {
	return fmt.Sprint(n.Status(context.Background()).Heads)
}

// waitConverged waits until every online node has the same heads, no queued
// DAG work and the same visible contacts.
func (c *cluster) waitConverged() {
	c.t.Helper()
	testnet.WaitFor(c.t, 60*time.Second, func() bool {
		nodes := c.online()
		for _, n := range nodes[1:] {
			if headsOf(n) != headsOf(nodes[0]) || n.Status(context.Background()).QueuedJobs > 0 {
				return false
			}
		}
		for _, n := range nodes[1:] {
			if visible(c.t, n) != visible(c.t, nodes[0]) {
				return false
			}
		}
		return true
	})
}

func (c *cluster) setOffline(offline bool, idx ...int) {
	c.t.Helper()
	for _, i := range idx {
		if err := c.nodes[i].SetOffline(offline); err != nil {
			c.t.Fatal(err)
		}
	}
	if offline {
		testnet.WaitFor(c.t, 10*time.Second, func() bool {
			for _, i := range idx {
				if len(c.nodes[i].Host().Network().Peers()) > 0 {
					return false
				}
			}
			return true
		})
	}
}

func put(t *testing.T, n *clusterNode, id string, fields map[string]any) {
	t.Helper()
	if _, err := n.Store().Put(context.Background(), "contacts", id, fields); err != nil {
		t.Fatalf("put on %s: %v", n.cfg.Name, err)
	}
}

func TestClusterJohnRodman(t *testing.T) {
	c := newCluster(t, 2)
	put(t, c.nodes[1], "c1", map[string]any{"first_name": "Jeff", "last_name": "Smith"})
	c.waitConverged()
	c.setOffline(true, 1, 2)
	put(t, c.nodes[1], "c1", map[string]any{"first_name": "John"})
	put(t, c.nodes[2], "c1", map[string]any{"last_name": "Rodman"})
	c.setOffline(false, 1, 2)
	c.waitConverged()
	for _, n := range c.nodes {
		if got := visible(t, n); got != "c1{first_name=John last_name=Rodman}" {
			t.Errorf("%s sees %s", n.cfg.Name, got)
		}
	}
}

// The edit made offline at 10:00 and synced at 12:00 loses to the edit made
// at 11:00 and synced at 11:01, on every node.
func TestClusterNewestWinsRegardlessOfSyncOrder(t *testing.T) {
	c := newCluster(t, 2)
	put(t, c.nodes[0], "c1", map[string]any{"last_name": "Smith", "phone": "100"})
	c.waitConverged()
	c.setOffline(true, 1, 2)
	at := func(h, m int) time.Time { return time.Date(2026, 3, 2, h, m, 0, 0, time.UTC) }
	c.nodes[1].clock.Set(at(10, 0))
	put(t, c.nodes[1], "c1", map[string]any{"phone": "from-10:00"})
	for i := range 20 { // a tall offline branch
		put(t, c.nodes[1], fmt.Sprintf("other%d", i), map[string]any{"last_name": "X"})
	}
	c.nodes[2].clock.Set(at(11, 0))
	put(t, c.nodes[2], "c1", map[string]any{"phone": "from-11:00"})
	c.nodes[2].clock.Set(at(11, 1))
	c.setOffline(false, 2)
	c.waitConverged()
	c.nodes[1].clock.Set(at(12, 0))
	c.setOffline(false, 1)
	c.waitConverged()
	for _, n := range c.nodes {
		rec, err := n.Store().Get(context.Background(), "contacts", "c1")
		if err != nil {
			t.Fatal(err)
		}
		if f := rec.Fields["phone"]; f.Value != "from-11:00" || len(f.Candidates) != 2 {
			t.Errorf("%s: phone %v with candidates %v, want the 11:00 edit and the 10:00 one as a conflict", n.cfg.Name, f.Value, f.Candidates)
		}
	}
}

func TestClusterOfflineEditsOnBothSidesConverge(t *testing.T) {
	c := newCluster(t, 1)
	office, laptop := c.nodes[0], c.nodes[1]
	put(t, office, "c1", map[string]any{"last_name": "Smith"})
	c.waitConverged()
	c.setOffline(true, 1)
	for i := range 30 {
		put(t, office, fmt.Sprintf("o%d", i), map[string]any{"last_name": "Office"})
		put(t, laptop, fmt.Sprintf("l%d", i), map[string]any{"last_name": "Laptop"})
	}
	put(t, office, "c1", map[string]any{"phone": "office"})
	put(t, laptop, "c1", map[string]any{"first_name": "laptop"})
	c.setOffline(false, 1)
	c.waitConverged()
	got := visible(t, laptop)
	for _, want := range []string{"o29{last_name=Office}", "l29{last_name=Laptop}", "c1{first_name=laptop last_name=Smith phone=office}"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %s in %s", want, got)
		}
	}
}

func TestClusterRestartKeepsDataAndCatchesUp(t *testing.T) {
	c := newCluster(t, 1)
	put(t, c.nodes[1], "c1", map[string]any{"last_name": "Smith"})
	c.waitConverged()
	if err := c.nodes[1].Close(); err != nil {
		t.Fatal(err)
	}
	put(t, c.nodes[0], "c2", map[string]any{"last_name": "Written while the laptop was down"})
	c.restart(1)
	c.waitConverged()
	got := visible(t, c.nodes[1])
	if !strings.Contains(got, "c1{last_name=Smith}") || !strings.Contains(got, "c2{") {
		t.Errorf("after restart the laptop sees %s", got)
	}
}

func TestClusterDeleteAgainstConcurrentEdit(t *testing.T) {
	c := newCluster(t, 2)
	ctx := context.Background()
	put(t, c.nodes[0], "c1", map[string]any{"first_name": "Jeff", "last_name": "Smith"})
	put(t, c.nodes[0], "c2", map[string]any{"first_name": "Anna", "last_name": "Meier"})
	c.waitConverged()
	c.setOffline(true, 1, 2)
	at := func(h int) time.Time { return time.Date(2026, 3, 2, h, 0, 0, 0, time.UTC) }
	// c1: deleted at 10:00, edited at 11:00 -> comes back whole.
	// c2: edited at 10:00, deleted at 11:00 -> stays deleted.
	c.nodes[1].clock.Set(at(10))
	if _, err := c.nodes[1].Store().Delete(ctx, "contacts", "c1"); err != nil {
		t.Fatal(err)
	}
	c.nodes[2].clock.Set(at(10))
	put(t, c.nodes[2], "c2", map[string]any{"phone": "555"})
	c.nodes[2].clock.Set(at(11))
	put(t, c.nodes[2], "c1", map[string]any{"phone": "777"})
	c.nodes[1].clock.Set(at(11))
	if _, err := c.nodes[1].Store().Delete(ctx, "contacts", "c2"); err != nil {
		t.Fatal(err)
	}
	c.setOffline(false, 1, 2)
	c.waitConverged()
	for _, n := range c.nodes {
		if got := visible(t, n); got != "c1{first_name=Jeff last_name=Smith phone=777}" {
			t.Errorf("%s sees %s", n.cfg.Name, got)
		}
		if _, err := n.Store().Get(ctx, "contacts", "c2"); !errors.Is(err, crdt.ErrNotFound) {
			t.Errorf("%s: c2 should be deleted, got %v", n.cfg.Name, err)
		}
	}
}
