package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	cid "github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/schema"
)

// nodeSpec says how to start one benchmark node.
type nodeSpec struct {
	name    string
	network bool
	peers   []multiaddr.Multiaddr
	// hooks, if set, counts go-ds-crdt hook events (operations merged,
	// local or remote).
	hooks *atomic.Int64
	// role is node.RoleLaptop unless set.
	role string
	// noListen: the node only dials out (spec.peers) and listens on no
	// address, so peer exchange has no address of it to hand to others.
	noListen bool
	// peerExchange overrides node.Config.PeerExchangeInterval.
	peerExchange time.Duration
	// disableBulkSync: catch up through go-ds-crdt's DAG walk over bitswap
	// only (plain go-ds-crdt), not Ferry's bulk block sync.
	disableBulkSync bool
	// founder names the node that founded this node's network (secured
	// mode); empty: this node founds its own. The founder enrols the
	// others (enrol) before they connect.
	founder string
	// historyKeep, if set, overrides crdt.Options.HistoryKeep (history_keep
	// in config.yaml, default 10).
	historyKeep *int
	// onEpoch, if set, is told each time the node moved to a new epoch
	// (it compacted, or adopted an office's).
	onEpoch func(crdt.EpochReport)
	// logger, if set, replaces the benchmark's logger (warnings to stderr).
	logger *slog.Logger
}

// nodeConfig is the node.Config of spec, its data dir root/<name> created.
// With network it listens on loopback TCP only (or nowhere, with noListen)
// and connects to spec.peers. Every benchmark node is configured here.
func (e *env) nodeConfig(spec nodeSpec) (node.Config, error) {
	cfg := node.DefaultConfig(filepath.Join(e.root, spec.name))
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return cfg, err
	}
	cfg.Name = spec.name
	cfg.Logger = e.log
	if spec.logger != nil {
		cfg.Logger = spec.logger
	}
	cfg.Network = spec.network
	cfg.Offline = false
	cfg.Topic = e.topic
	cfg.Peers = spec.peers
	cfg.ListenAddrs = []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")}
	if spec.noListen {
		cfg.ListenAddrs = nil
	}
	if spec.role != "" {
		cfg.Role = spec.role
	}
	if spec.peerExchange > 0 {
		cfg.PeerExchangeInterval = spec.peerExchange
	}
	cfg.DisableBulkSync = spec.disableBulkSync
	if e.cfg.secured {
		// What `ferry init --office` and `ferry init --join` configure: the
		// network's swarm key (a libp2p private network, TCP only) and its
		// founder (signed operations, members only).
		founder := spec.founder
		if founder == "" {
			founder = spec.name
		}
		id, err := e.peerID(founder)
		if err != nil {
			return cfg, err
		}
		cfg.Founder = id.String()
		cfg.SwarmKey = e.swarmKey
	}
	if spec.historyKeep != nil {
		cfg.Store.HistoryKeep = *spec.historyKeep
	}
	cfg.Store.OnEpoch = spec.onEpoch
	if spec.hooks != nil {
		hooks := spec.hooks
		cfg.Store.OnChange = func(string, string) { hooks.Add(1) }
	}
	return cfg, nil
}

// startNode starts the node of spec (see nodeConfig).
func (e *env) startNode(ctx context.Context, spec nodeSpec) (*node.Node, error) {
	cfg, err := e.nodeConfig(spec)
	if err != nil {
		return nil, err
	}
	return startConfigured(ctx, cfg)
}

// startConfigured starts the node cfg configures (nodeConfig's, or
// chanConfig's).
func startConfigured(ctx context.Context, cfg node.Config) (*node.Node, error) {
	n, err := node.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("start node %s: %w", cfg.Name, err)
	}
	return n, nil
}

// cleanSync runs node.CleanSync (what `ferry clean-sync` and `ferry init
// --from-office` do) for the node of spec, whose peers name the office. The
// node is not left running.
func (e *env) cleanSync(ctx context.Context, spec nodeSpec, progress func(node.CleanSyncProgress)) (node.CleanSyncResult, error) {
	cfg, err := e.nodeConfig(spec)
	if err != nil {
		return node.CleanSyncResult{}, err
	}
	res, err := node.CleanSync(ctx, cfg, false, progress)
	if err != nil {
		return res, fmt.Errorf("clean sync of node %s: %w", spec.name, err)
	}
	return res, nil
}

// peerID is the peer id of the node root/<name>: its identity key is
// created if the node has not started yet.
func (e *env) peerID(name string) (peer.ID, error) {
	dir := filepath.Join(e.root, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	key, err := datadir.LoadOrCreateIdentity(filepath.Join(dir, datadir.IdentityFile))
	if err != nil {
		return "", err
	}
	return peer.IDFromPrivateKey(key)
}

// enrol makes the nodes named members of founder's network, as laptops
// (what redeeming a `ferry invite` token does), before they first connect.
// One delta each; nothing in an open network.
func (e *env) enrol(ctx context.Context, founder *node.Node, names ...string) error {
	if !e.cfg.secured {
		return nil
	}
	for _, name := range names {
		id, err := e.peerID(name)
		if err != nil {
			return err
		}
		if err := founder.Store().AddMember(ctx, id.String(), name, node.RoleLaptop); err != nil {
			return fmt.Errorf("enrol %s on %s: %w", name, founder.Config().Name, err)
		}
	}
	return nil
}

// networkNote says how the in-process nodes are networked.
func (e *env) networkNote() string {
	if e.cfg.secured {
		return "Network (--network secured, what `ferry init --office` and `ferry init --join` make): in every benchmark the first node (the office, the catch-up source, the single node of edit and import) founds a network: all its nodes share one swarm key (libp2p private network, TCP only) and that founder, every operation is signed (Ed25519) and checked against the replicated membership, and the founder enrols the other nodes (Store.AddMember, what redeeming an invitation records) before they connect."
	}
	return "Network (--network open): no swarm key and no founder, nothing signed or checked, every peer admitted (what `ferry init` without --office or --join makes, for trying Ferry out)."
}

// closeNode closes n and reports a failure as an error of the benchmark.
func closeNode(n *node.Node, errp *error) {
	if err := n.Close(); err != nil && *errp == nil {
		*errp = fmt.Errorf("close node %s: %w", n.Config().Name, err)
	}
}

// applySchema applies the benchmark schema to a store.
func (e *env) applySchema(ctx context.Context, st *crdt.Store) error {
	sc, err := schema.Parse(e.schema)
	if err != nil {
		return fmt.Errorf("parse schema: %w", err)
	}
	if _, err := st.ApplySchema(ctx, sc); err != nil {
		return fmt.Errorf("apply schema: %w", err)
	}
	return nil
}

// importAll imports records into contacts (on a copy: Import rewrites them).
func importAll(ctx context.Context, st *crdt.Store, recs []crdt.ImportRecord) (crdt.ImportResult, error) {
	res, err := st.Import(ctx, contactsCollection, cloneRecords(recs), nil)
	if err != nil {
		return res, fmt.Errorf("import %d contacts: %w", len(recs), err)
	}
	return res, nil
}

// digestContacts hashes the visible state of every contact (id, field
// names, values, and the number of candidates of conflicted fields), in
// key order. Op ids are left out, so two nodes that wrote the same values
// independently have the same digest.
func digestContacts(ctx context.Context, st *crdt.Store) (string, int, error) {
	h := sha256.New()
	n := 0
	err := st.List(ctx, contactsCollection, func(r *crdt.Record) error {
		n++
		fmt.Fprintf(h, "%q{", r.ID)
		names := make([]string, 0, len(r.Fields))
		for name := range r.Fields {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			fv := r.Fields[name]
			b, err := json.Marshal(fv.Value)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%q:%s/%d,", name, b, len(fv.Candidates))
		}
		fmt.Fprint(h, "}")
		return nil
	})
	if err != nil {
		return "", 0, fmt.Errorf("list contacts: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], n, nil
}

// checkState verifies that a store holds exactly the expected contacts.
func checkState(ctx context.Context, st *crdt.Store, want map[string]map[string]any) error {
	seen := 0
	var bad []string
	err := st.List(ctx, contactsCollection, func(r *crdt.Record) error {
		seen++
		if w, ok := want[r.ID]; !ok || !reflect.DeepEqual(r.Values(), w) {
			if len(bad) < 3 {
				bad = append(bad, fmt.Sprintf("%s: got %v, want %v", r.ID, r.Values(), w))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check state: %w", err)
	}
	if seen != len(want) || len(bad) > 0 {
		return fmt.Errorf("state check failed: %d contacts (want %d); %v", seen, len(want), bad)
	}
	return nil
}

func sortedHeads(hs []cid.Cid) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	slices.Sort(out)
	return out
}
