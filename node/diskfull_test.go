package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/multiformats/go-multiaddr"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/disk"
	"github.com/ferry-crm/ferry/schema"
)

// Full disks on real nodes (issue 10): the disk reserve refuses local
// writes and nothing else, a node whose store writes fail (disk.FaultFullEnv)
// repairs itself once they succeed again, and a clean sync onto a disk that
// refuses writes fails cleanly.

// restartWith closes node i and starts it again on the same data dir and,
// for the office, the same TCP port (the laptops dial that address), with
// change applied to its config.
func (c *cluster) restartWith(i int, change func(*Config)) {
	c.t.Helper()
	n := c.nodes[i]
	cfg := n.cfg
	if i == 0 {
		var listen []multiaddr.Multiaddr
		for _, a := range n.Addrs() {
			if _, err := a.ValueForProtocol(multiaddr.P_TCP); err != nil {
				continue
			}
			tr, _ := multiaddr.SplitLast(a) // drop /p2p/<id>
			listen = append(listen, tr)
		}
		if len(listen) == 0 {
			c.t.Fatalf("office has no TCP address: %v", n.Addrs())
		}
		cfg.ListenAddrs = listen[:1]
	}
	change(&cfg)
	if err := n.Close(); err != nil {
		c.t.Fatal(err)
	}
	n2, err := Start(context.Background(), cfg)
	if err != nil {
		c.t.Fatalf("restart %s: %v", cfg.Name, err)
	}
	c.nodes[i] = &clusterNode{Node: n2, dir: n.dir, clock: n.clock, cfg: cfg}
}

// waitConnected waits until the office and node i are connected.
func (c *cluster) waitConnected(i int) {
	c.t.Helper()
	testnet.WaitFor(c.t, 15*time.Second, func() bool {
		return c.nodes[0].Host().Network().Connectedness(c.nodes[i].ID()) == network.Connected
	})
}

// within polls cond until it returns true or timeout passes.
func within(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func hasRecord(t *testing.T, n *clusterNode, id string) bool {
	t.Helper()
	_, err := n.Store().Get(context.Background(), "contacts", id)
	switch {
	case err == nil:
		return true
	case errors.Is(err, crdt.ErrNotFound):
		return false
	default:
		t.Fatalf("%s: get %s: %v", n.cfg.Name, id, err)
		return false
	}
}

var freeInMessage = regexp.MustCompile(`: ([0-9.]+ [KMGTPE]?i?B) free on the disk of `)

func TestDiskReserveRefusesLocalWrites(t *testing.T) {
	c := newCluster(t, 1)
	ctx := context.Background()
	put(t, c.nodes[0], "base", map[string]any{"last_name": "Base"})
	c.waitConverged()

	// The office keeps a reserve larger than any disk: its own writes are
	// refused, the laptop's (no reserve) are written and merged there.
	c.restartWith(0, func(cfg *Config) { cfg.DiskReserve = &disk.Reserve{Bytes: 1 << 60} })
	c.waitConnected(1)
	c.waitConverged()
	office, laptop := c.nodes[0], c.nodes[1]

	st := office.Status(ctx)
	if st.Disk == nil || !st.Disk.Full || !st.Disk.Low || st.Disk.Reserve != 1<<60 {
		t.Fatalf("office status disk %+v, want full under a reserve of 1 EiB", st.Disk)
	}
	heads := headsOf(office)

	wider, err := schema.Parse([]byte(clusterSchema + "      email:      {type: string}\n"))
	if err != nil {
		t.Fatal(err)
	}
	writes := []struct {
		what string
		do   func() error
	}{
		{"put", func() error {
			_, err := office.Store().Put(ctx, "contacts", "refused", map[string]any{"last_name": "Refused"})
			return err
		}},
		{"import", func() error {
			_, err := office.Store().Import(ctx, "contacts", []crdt.ImportRecord{
				{Line: 1, ID: "imp1", Fields: map[string]any{"last_name": "Imported"}},
				{Line: 2, ID: "imp2", Fields: map[string]any{"last_name": "Imported"}},
			}, nil)
			return err
		}},
		{"delete", func() error {
			_, err := office.Store().Delete(ctx, "contacts", "base")
			return err
		}},
		{"schema", func() error {
			_, err := office.Store().ApplySchema(ctx, wider)
			return err
		}},
	}
	for _, w := range writes {
		err := w.do()
		if err == nil {
			t.Errorf("%s under the reserve: no error", w.what)
			continue
		}
		if !errors.Is(err, disk.ErrLow) || !errors.Is(err, crdt.ErrNotWritten) {
			t.Errorf("%s under the reserve: %v, want disk.ErrLow and crdt.ErrNotWritten", w.what, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, office.dir) {
			t.Errorf("%s: %q does not name the data dir %s", w.what, msg, office.dir)
		}
		m := freeInMessage.FindStringSubmatch(msg)
		if m == nil {
			t.Errorf("%s: %q does not say how much space is free", w.what, msg)
			continue
		}
		said, err := humanize.ParseBytes(m[1])
		free := office.Status(ctx).Disk.Free
		if err != nil || float64(said) < 0.9*float64(free) || float64(said) > 1.1*float64(free) {
			t.Errorf("%s: the message says %s free (%v), status says %s", w.what, m[1], err, humanize.IBytes(free))
		}
	}

	// Nothing changed.
	if got := headsOf(office); got != heads {
		t.Errorf("refused writes changed the heads: %s -> %s", heads, got)
	}
	for _, id := range []string{"refused", "imp1", "imp2"} {
		if hasRecord(t, office, id) {
			t.Errorf("refused write of %s is visible", id)
		}
	}
	if !hasRecord(t, office, "base") {
		t.Error("refused delete deleted base")
	}
	if coll, err := office.Store().Collection(ctx, "contacts"); err != nil || coll.Fields["email"] != nil {
		t.Errorf("refused schema change applied: %v %v", coll, err)
	}
	if st := office.Status(ctx); st.Dirty || st.RepairReason != "" || st.FailedWrites != 0 {
		t.Errorf("refused writes made the store need repair: dirty %t, reason %q, failed writes %d", st.Dirty, st.RepairReason, st.FailedWrites)
	}

	// A peer's writes are merged by the node whose disk is low.
	put(t, laptop, "from-laptop", map[string]any{"last_name": "Laptop"})
	c.waitConverged()
	if !hasRecord(t, office, "from-laptop") {
		t.Fatal("the office did not merge the laptop's write under its reserve")
	}
	if headsOf(office) == heads {
		t.Error("the office's heads did not move with the laptop's write")
	}
	if st := office.Status(ctx); st.Dirty || st.FailedWrites != 0 {
		t.Errorf("after the merge: dirty %t, failed writes %d", st.Dirty, st.FailedWrites)
	}
	for _, id := range []string{"refused", "imp1"} {
		if hasRecord(t, laptop, id) {
			t.Errorf("the laptop received the refused write of %s", id)
		}
	}

	// With no reserve, the same writes succeed.
	c.restartWith(0, func(cfg *Config) { cfg.DiskReserve = &disk.Reserve{} })
	c.waitConnected(1)
	office = c.nodes[0]
	if st := office.Status(ctx); st.Disk == nil || st.Disk.Full {
		t.Fatalf("office status disk %+v with no reserve", st.Disk)
	}
	for _, w := range writes {
		if err := w.do(); err != nil {
			t.Errorf("%s with no reserve: %v", w.what, err)
		}
	}
	c.waitConverged()
	for _, n := range c.nodes {
		for id, want := range map[string]bool{"refused": true, "imp1": true, "imp2": true, "base": false, "from-laptop": true} {
			if got := hasRecord(t, n, id); got != want {
				t.Errorf("%s: %s present %t, want %t", n.cfg.Name, id, got, want)
			}
		}
		if coll, err := n.Store().Collection(ctx, "contacts"); err != nil || coll.Fields["email"] == nil {
			t.Errorf("%s: schema change missing: %v", n.cfg.Name, err)
		}
	}
}

func TestNodeRepairsAfterDiskFull(t *testing.T) {
	c := newCluster(t, 1)
	ctx := context.Background()
	full := filepath.Join(t.TempDir(), "laptop.diskfull")
	// Only the laptop reads the variable: it is read when a node starts.
	t.Setenv(disk.FaultFullEnv, full)
	c.restart(1)
	c.waitConnected(1)
	c.waitConverged()
	office, laptop := c.nodes[0], c.nodes[1]
	if laptop.fault == nil || office.fault != nil {
		t.Fatal("the fault injection should wrap the laptop's store only")
	}

	if err := os.WriteFile(full, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(full) }) // before the nodes close
	for i := range 20 {
		put(t, office, fmt.Sprintf("r%d", i), map[string]any{"last_name": "Office"})
	}
	testnet.WaitFor(t, 10*time.Second, func() bool { return laptop.fault.Refused() > 0 })
	// The laptop tried to merge the office's deltas and its writes failed:
	// it knows it needs repair.
	if !within(5*time.Second, func() bool {
		st := laptop.Status(ctx)
		return st.Dirty && st.RepairReason != "" && st.FailedWrites > 0
	}) {
		st := laptop.Status(ctx)
		t.Errorf("%d writes of the laptop refused while merging the office's deltas, and its status does not say it needs repair: dirty %t, repair reason %q, failed writes %d",
			laptop.fault.Refused(), st.Dirty, st.RepairReason, st.FailedWrites)
	}
	st := laptop.Status(ctx)
	t.Logf("laptop while its disk is full: dirty %t, reason %q, failed writes %d, refused writes %d", st.Dirty, st.RepairReason, st.FailedWrites, laptop.fault.Refused())

	// A local write on the full disk fails and leaves nothing.
	_, err := laptop.Store().Put(ctx, "contacts", "lost", map[string]any{"last_name": "Never written"})
	if !errors.Is(err, crdt.ErrNotWritten) {
		t.Fatalf("put on a full disk: %v, want crdt.ErrNotWritten", err)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("put on a full disk: %v does not wrap ENOSPC", err)
	}
	if hasRecord(t, laptop, "lost") {
		t.Error("the failed put is visible on the laptop")
	}

	if err := os.Remove(full); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	var last apijson.Status
	var clean time.Duration // when the laptop first said it needs no repair
	deadline := time.Now().Add(30 * time.Second)
	for {
		last = laptop.Status(ctx)
		if !last.Dirty && clean == 0 {
			clean = time.Since(freed)
		}
		od := office.Status(ctx).Digest
		if !last.Dirty && last.Digest != "" && last.Digest == od {
			n := 0
			for i := range 20 {
				if hasRecord(t, laptop, fmt.Sprintf("r%d", i)) {
					n++
				}
			}
			if n == 20 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("laptop not repaired within 30 s of the disk freeing: dirty %t, reason %q, failed writes %d, digest %q (office %q), heads %v (office %v), queued %d",
				last.Dirty, last.RepairReason, last.FailedWrites, last.Digest, od, last.Heads, office.Status(ctx).Heads, last.QueuedJobs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	converged := time.Since(freed)
	t.Logf("laptop not dirty %s and converged %s after the disk freed", clean.Round(time.Millisecond), converged.Round(time.Millisecond))
	if ex, ok := laptop.net.heads.LastExchange(office.ID()); ok && ex.After(freed) {
		t.Logf("the laptop's last heads exchange with the office was %s after the disk freed", ex.Sub(freed).Round(time.Millisecond))
	}

	for _, n := range c.nodes {
		r, err := n.Check(ctx, false)
		if err != nil {
			t.Fatalf("%s: check: %v", n.cfg.Name, err)
		}
		if !r.OK {
			t.Errorf("%s: check not OK: %+v", n.cfg.Name, r)
		}
	}

	// The failed put never shows anywhere, not even with the next write
	// (go-ds-crdt used to publish a failed delta with the next one).
	put(t, laptop, "after", map[string]any{"last_name": "Written once the disk freed"})
	c.waitConverged()
	for _, n := range c.nodes {
		if hasRecord(t, n, "lost") {
			t.Errorf("%s: the failed put is visible", n.cfg.Name)
		}
		if !hasRecord(t, n, "after") {
			t.Errorf("%s: the write after the repair is missing", n.cfg.Name)
		}
	}
}

func TestCleanSyncOnFullDisk(t *testing.T) {
	c := newCluster(t, 0)
	ctx := context.Background()
	office := c.nodes[0]
	for i := range 50 {
		put(t, office, fmt.Sprintf("o%d", i), map[string]any{"last_name": "Office"})
	}
	dir := filepath.Join(t.TempDir(), "fresh")
	fresh := c.enrol(dir, "fresh", RoleLaptop, office.Addrs()[:1], &settableClock{t: time.Now()})

	full := filepath.Join(t.TempDir(), "fresh.diskfull")
	t.Setenv(disk.FaultFullEnv, full) // the office is running: it never reads it
	if err := os.WriteFile(full, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	start := time.Now()
	_, err := CleanSync(cctx, fresh, false, nil)
	took := time.Since(start)
	t.Logf("clean sync on a full disk: %v after %s", err, took.Round(time.Millisecond))
	// The snapshot copy writes badger directly, not through the fault
	// wrapper: it may complete, and then the node, which has heads, starts
	// on the full disk without recording its name (it does so at its next
	// start). Otherwise the clean sync must fail promptly, saying why.
	switch {
	case took > 20*time.Second:
		t.Errorf("clean sync on a full disk took %s (%v): want a prompt answer", took, err)
	case err != nil && (!errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "no space left on device")):
		t.Errorf("clean sync on a full disk: %v, want an error saying the disk is full", err)
	}
	_, storeErr := os.Stat(filepath.Join(dir, "store"))
	_, markerErr := os.Stat(filepath.Join(dir, datadir.OpenMarkerFile))
	t.Logf("after the failed clean sync: store present %t, open marker present %t", storeErr == nil, markerErr == nil)

	if err := os.Remove(full); err != nil {
		t.Fatal(err)
	}
	officeDigest, err := office.Store().Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// What the failed clean sync left is either nothing, or a store that a
	// start does not take as complete unless it is the office's state
	// (a start on it says it needs repair).
	if storeErr == nil {
		cfg := fresh
		cfg.Network = false
		n, err := Start(ctx, cfg)
		if err != nil {
			t.Fatalf("start after the failed clean sync: %v", err)
		}
		st := n.Store().Stats(ctx)
		d, err := n.Store().Digest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("store left by the failed clean sync: dirty %t, reason %q, same digest as the office %t", st.Dirty, st.RepairReason, d == officeDigest)
		if !st.Dirty && d != officeDigest {
			t.Errorf("the failed clean sync left a partial store that starts clean (digest %s, office %s)", d, officeDigest)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}

	res, err := CleanSync(cctx, fresh, false, nil)
	if err != nil {
		t.Fatalf("clean sync once the disk freed: %v", err)
	}
	if res.Digest == "" || res.Peer != office.ID() {
		t.Errorf("clean sync result %+v", res)
	}
	// The laptop runs: it announces itself to the office, and both hold
	// the same state.
	n, err := Start(ctx, fresh)
	if err != nil {
		t.Fatal(err)
	}
	laptop := &clusterNode{Node: n, dir: dir, cfg: fresh}
	c.nodes = append(c.nodes, laptop) // closed with the cluster
	c.waitConverged()
	testnet.WaitFor(t, 10*time.Second, func() bool {
		d := laptop.Status(ctx).Digest
		return d != "" && d == office.Status(ctx).Digest
	})
	if st := laptop.Status(ctx); st.Dirty || st.FailedWrites != 0 {
		t.Errorf("after the clean sync: dirty %t (%q), failed writes %d", st.Dirty, st.RepairReason, st.FailedWrites)
	}
	for i := range 50 {
		if !hasRecord(t, laptop, fmt.Sprintf("o%d", i)) {
			t.Errorf("after the clean sync the laptop lacks o%d", i)
		}
	}
}

// TestStartOnFullDisk: a node whose disk is full still starts when it has
// written before (its data can be read; it merges once there is room), and
// a start that fails (a fresh node that cannot write its first record)
// keeps the open marker, so that the next start repairs the store.
func TestStartOnFullDisk(t *testing.T) {
	ctx := context.Background()
	full := filepath.Join(t.TempDir(), "diskfull")
	t.Setenv(disk.FaultFullEnv, full)
	clock := &settableClock{t: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)}

	// A fresh node cannot start on a full disk, and keeps its marker.
	fresh := filepath.Join(t.TempDir(), "fresh")
	if err := os.WriteFile(full, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := nodeConfig(t, fresh, "fresh", RoleLaptop, nil, clock)
	if n, err := Start(ctx, cfg); err == nil {
		_ = n.Close()
		t.Fatal("a node that never wrote started on a full disk")
	} else if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("start on a full disk: %v", err)
	}
	if _, err := os.Stat(filepath.Join(fresh, datadir.OpenMarkerFile)); err != nil {
		t.Fatalf("a failed start removed the open marker: %v", err)
	}
	if err := os.Remove(full); err != nil {
		t.Fatal(err)
	}
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start with room again: %v", err)
	}
	testnet.WaitFor(t, 10*time.Second, func() bool { return !n.Status(ctx).Dirty })
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	// A node that wrote before starts on a full disk, even when it has
	// something to write at start (a new name), and says so.
	if err := os.WriteFile(full, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Name = "renamed"
	n, err = Start(ctx, cfg)
	if err != nil {
		t.Fatalf("a node that wrote before does not start on a full disk: %v", err)
	}
	defer n.Close()
	if _, err := n.Store().Get(ctx, crdt.NodesCollection, n.ID().String()); err != nil {
		t.Fatalf("its data cannot be read on a full disk: %v", err)
	}
	if err := n.Store().SetNodeInfo(ctx, "renamed again", RoleLaptop); !errors.Is(err, crdt.ErrNotWritten) {
		t.Fatalf("a write on the full disk: %v, want ErrNotWritten", err)
	}
	if err := os.Remove(full); err != nil {
		t.Fatal(err)
	}
	testnet.WaitFor(t, 15*time.Second, func() bool { return !n.Status(ctx).Dirty })
}
