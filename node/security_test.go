package node

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dscrdt "github.com/ipfs/go-ds-crdt"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/p2p"
)

// The attacks of docs/security.md, each against real nodes on loopback.

const pricesSchema = clusterSchema + `
  prices:
    writers: office
    fields:
      amount: {type: number}
`

// ignoredOn reports whether node n lists op as ignored for reason.
func ignoredOn(t *testing.T, n *clusterNode, op crdt.OpID, reason string) bool {
	t.Helper()
	ig, err := n.Store().Ignored(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(ig, func(o crdt.IgnoredOp) bool { return o.Op == op && o.Reason == reason })
}

func fieldOn(t *testing.T, n *clusterNode, coll, id, field string) any {
	t.Helper()
	rec, err := n.Store().Get(context.Background(), coll, id)
	if errors.Is(err, crdt.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return rec.Fields[field].Value
}

func TestWrongSwarmKeyCannotConnect(t *testing.T) {
	c := newCluster(t, 0)
	office := c.nodes[0]
	info := peer.AddrInfo{ID: office.ID(), Addrs: office.Host().Addrs()}
	otherKey, err := datadir.NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	for name, psk := range map[string][]byte{"another swarm key": otherKey, "no swarm key": nil} {
		key, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		h, err := p2p.NewHost(p2p.HostConfig{Key: key, ListenAddrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")}, PSK: psk})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = h.Connect(ctx, info)
		cancel()
		if err == nil {
			t.Errorf("%s: connected to the office", name)
		}
		if office.Host().Network().Connectedness(h.ID()) == network.Connected {
			t.Errorf("%s: the office shows a connection", name)
		}
		_ = h.Close()
	}
}

func TestStolenSwarmKeyCannotWrite(t *testing.T) {
	c := newCluster(t, 1)
	office := c.nodes[0]
	ctx := context.Background()
	// A machine with the swarm key and the founder's id, never enrolled: it
	// cannot write (its store refuses), so a modified client writes
	// straight into its store.
	dir := filepath.Join(t.TempDir(), "thief")
	clock := &settableClock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}
	cfg := nodeConfig(t, dir, "thief", RoleLaptop, office.Addrs()[:1], clock)
	cfg.SwarmKey, cfg.Founder = c.psk, c.founder
	cfg.Offline = true
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	thief := &clusterNode{Node: n, dir: dir, clock: clock, cfg: cfg}
	if _, err := thief.Store().Put(ctx, "contacts", "stolen", map[string]any{"last_name": "Thief"}); err == nil {
		t.Fatal("a node that is not a member wrote")
	}
	stolen := rawWrite(t, thief, "contacts", "stolen", "last_name", "Thief", thief.ID(), identityOf(t, thief))
	cfg.Offline = false
	if thief.Node, err = Start(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	defer thief.Close()
	// Without an open invitation the office refuses the connection itself.
	testnet.WaitFor(t, 10*time.Second, func() bool { return thief.net.peering.DialAttempts() >= 3 })
	if office.Host().Network().Connectedness(thief.ID()) == network.Connected {
		t.Fatal("the office accepted a connection from a peer that is not a member")
	}
	// With an open invitation it connects, but every protocol refuses it.
	if _, err := office.Invite(ctx, "someone else", RoleLaptop, time.Hour); err != nil {
		t.Fatal(err)
	}
	testnet.WaitFor(t, 10*time.Second, func() bool { return office.net.admission.Refused() > 0 })
	thief.SyncNow(ctx)
	c.waitConverged()
	for _, n := range c.nodes {
		if v := fieldOn(t, n, "contacts", "stolen", "last_name"); v != nil {
			t.Errorf("%s shows the thief's record", n.cfg.Name)
		}
		if hist, err := n.Store().History(ctx, "contacts", "stolen", ""); err != nil || len(hist) != 0 {
			t.Errorf("%s holds the thief's op %v (%v): %v", n.cfg.Name, stolen, err, hist)
		}
	}
}

// rawWrite writes one operation into a stopped node's store the way a
// modified client would: straight into go-ds-crdt, as writer, signed with
// signer, tombstoning the field's current op. It returns the op's id.
func rawWrite(t *testing.T, n *clusterNode, coll, id, field string, value any, writer peer.ID, signer crypto.PrivKey) crdt.OpID {
	t.Helper()
	ctx := context.Background()
	var old crdt.OpID // the op superseded; none for a new record
	switch cur, err := n.Store().Get(ctx, coll, id); {
	case err == nil:
		old = cur.Fields[field].Op
	case !errors.Is(err, crdt.ErrNotFound):
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	base, err := datadir.OpenStore(n.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	eng, err := dscrdt.New(base, ds.NewKey("/ferry/crdt"), p2p.NewOfflineDAGService(datadir.NewBlockstore(base)), nil, dscrdt.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	eid, _ := crdt.EscapeID(id)
	op := crdt.OpID{Time: max(old.Time, crdt.TimestampOf(time.Now())) + 1<<16, Writer: writer.String()}
	key := crdt.WriteKey(coll, eid, op)
	w := crdt.Op{ID: op, Field: field, Value: value}
	if old.Writer != "" {
		w.Supersedes = []string{field + "/" + old.String()}
	}
	unsigned, err := crdt.EncodeOps([]crdt.Op{w})
	if err != nil {
		t.Fatal(err)
	}
	// One write, one element: the signature covers
	// "ferry-write/2\n<key>\n<encoded write>", and follows it.
	sig, err := signer.Sign(crdt.SigningMessage(key, unsigned))
	if err != nil {
		t.Fatal(err)
	}
	data := append(unsigned, sig...)
	b, err := eng.Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, ds.NewKey(key), data); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return op
}

func identityOf(t *testing.T, n *clusterNode) crypto.PrivKey {
	t.Helper()
	key, err := datadir.LoadOrCreateIdentity(filepath.Join(n.dir, datadir.IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestModifiedClientCannotWriteOfficeOnlyCollection(t *testing.T) {
	c := newClusterWith(t, 2, pricesSchema, nil)
	office, laptop := c.nodes[0], c.nodes[1]
	ctx := context.Background()
	if _, err := office.Store().Put(ctx, "prices", "p1", map[string]any{"amount": 10.0}); err != nil {
		t.Fatal(err)
	}
	c.waitConverged()
	testnet.WaitFor(t, 10*time.Second, func() bool { return fieldOn(t, laptop, "prices", "p1", "amount") == 10.0 })
	if _, err := laptop.Store().Put(ctx, "prices", "p1", map[string]any{"amount": 1.0}); !errors.Is(err, crdt.ErrForbidden) {
		t.Fatalf("laptop put to an office-only collection: %v, want ErrForbidden", err)
	}
	forged := rawWrite(t, laptop, "prices", "p1", "amount", 1.0, laptop.ID(), identityOf(t, laptop))
	c.restart(1)
	c.waitConverged()
	for _, n := range c.nodes {
		testnet.WaitFor(t, 10*time.Second, func() bool { return ignoredOn(t, n, forged, crdt.ReasonRole) })
		if v := fieldOn(t, n, "prices", "p1", "amount"); v != 10.0 {
			t.Errorf("%s: price %v, want the office's 10", n.cfg.Name, v)
		}
		if st := n.Status(ctx); st.IgnoredOps != 1 || len(st.Ignored) != 1 || st.Ignored[0].Reason != crdt.ReasonRole {
			t.Errorf("%s: status ignored %d %+v", n.cfg.Name, st.IgnoredOps, st.Ignored)
		}
	}
}

func TestForgedSignatureIgnored(t *testing.T) {
	c := newCluster(t, 2)
	l1, l2 := c.nodes[1], c.nodes[2]
	put(t, l1, "c1", map[string]any{"last_name": "Smith"})
	c.waitConverged()
	// laptop2 writes as laptop1, with its own key.
	forged := rawWrite(t, l2, "contacts", "c1", "last_name", "Forged", l1.ID(), identityOf(t, l2))
	c.restart(2)
	// The modified client's own store shows what it wrote (nothing checked
	// it there); the honest nodes get the op and ignore it.
	testnet.WaitFor(t, 20*time.Second, func() bool {
		return headsOf(c.nodes[0]) == headsOf(c.nodes[2]) && headsOf(c.nodes[1]) == headsOf(c.nodes[2])
	})
	for _, n := range c.nodes[:2] {
		testnet.WaitFor(t, 10*time.Second, func() bool { return ignoredOn(t, n, forged, crdt.ReasonBadSignature) })
		if v := fieldOn(t, n, "contacts", "c1", "last_name"); v != "Smith" {
			t.Errorf("%s: last_name %v, want Smith", n.cfg.Name, v)
		}
	}
}

func TestRevokedLaptopLaterWritesVanish(t *testing.T) {
	c := newCluster(t, 2)
	office, l1, l2 := c.nodes[0], c.nodes[1], c.nodes[2]
	ctx := context.Background()
	put(t, l1, "early", map[string]any{"last_name": "Before"})
	c.waitConverged()
	// The laptops know each other (peer exchange) and keep syncing
	// directly while the office revokes laptop1 offline.
	testnet.WaitFor(t, 10*time.Second, func() bool {
		return l2.Host().Network().Connectedness(l1.ID()) == network.Connected
	})
	c.setOffline(true, 0)
	for _, n := range c.nodes {
		n.clock.Set(time.Date(2026, 3, 2, 9, 1, 0, 0, time.UTC))
	}
	if err := office.Store().RevokeMember(ctx, l1.ID().String()); err != nil {
		t.Fatal(err)
	}
	l1.clock.Set(time.Date(2026, 3, 2, 9, 2, 0, 0, time.UTC))
	put(t, l1, "late", map[string]any{"last_name": "After"})
	testnet.WaitFor(t, 10*time.Second, func() bool { return fieldOn(t, l2, "contacts", "late", "last_name") == "After" })

	c.setOffline(false, 0)
	testnet.WaitFor(t, 20*time.Second, func() bool {
		m, ok, _ := l2.Store().Member(ctx, l1.ID().String())
		return ok && m.Revoked
	})
	// laptop2 now ignores what laptop1 wrote after its revocation, and
	// both drop their connections to it.
	testnet.WaitFor(t, 10*time.Second, func() bool {
		return fieldOn(t, l2, "contacts", "late", "last_name") == nil &&
			l2.Host().Network().Connectedness(l1.ID()) != network.Connected &&
			office.Host().Network().Connectedness(l1.ID()) != network.Connected
	})
	for _, n := range []*clusterNode{office, l2} {
		if v := fieldOn(t, n, "contacts", "early", "last_name"); v != "Before" {
			t.Errorf("%s: the revoked laptop's earlier write is gone (%v)", n.cfg.Name, v)
		}
		if v := fieldOn(t, n, "contacts", "late", "last_name"); v != nil {
			t.Errorf("%s: shows the write made after the revocation", n.cfg.Name)
		}
	}
	// The office got laptop1's late op through laptop2 and ignores it too.
	testnet.WaitFor(t, 20*time.Second, func() bool { return headsOf(office) == headsOf(l2) })
	late := crdt.OpID{}
	hist, err := l2.Store().History(ctx, "contacts", "late", "")
	if err != nil || len(hist) == 0 {
		t.Fatalf("history of the late record on laptop2: %v %v", hist, err)
	}
	late = hist[0].Op
	for _, n := range []*clusterNode{office, l2} {
		testnet.WaitFor(t, 10*time.Second, func() bool { return ignoredOn(t, n, late, crdt.ReasonRevoked) })
	}
	if office.Status(ctx).Digest != l2.Status(ctx).Digest {
		t.Error("office and laptop2 digests differ")
	}
}
