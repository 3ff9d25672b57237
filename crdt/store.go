// Package crdt is Ferry's record model on top of go-ds-crdt: every write of a
// field is its own operation, stamped with a hybrid logical clock and its
// writer, that tombstones the operations its writer saw. Operations that did
// not see each other all stay visible; the newest one is the value and the
// others make a conflict. The rules are written down in docs/merge-rules.md.
//
// The package knows nothing of the network: it takes a go-datastore, an
// ipld.DAGService and a go-ds-crdt Broadcaster.
package crdt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cid "github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dscrdt "github.com/ipfs/go-ds-crdt"
	ipld "github.com/ipfs/go-ipld-format"

	"github.com/ferry-crm/ferry/schema"
)

// Errors callers can test for.
var (
	// ErrNotFound: the record does not exist (never written, or deleted).
	ErrNotFound = errors.New("record not found")
	// ErrTooLarge: one write would not fit in one replicated delta.
	ErrTooLarge = errors.New("write too large")
)

// Options configure a Store. Start from DefaultOptions.
type Options struct {
	// Writer is this node's identity (its libp2p peer id); required. It is
	// stamped on every operation and breaks timestamp ties.
	Writer string
	// Root is where the store keeps its own keys (epochs, history archive,
	// cut blocks; see roots.go): default DefaultRoot, "/ferry".
	Root ds.Key
	// Namespace is where go-ds-crdt keeps its state in the datastore
	// (default Root + "/crdt"; later epochs use Namespace + "-<epoch>").
	Namespace ds.Key
	// Logger receives the store's and go-ds-crdt's logs.
	Logger *slog.Logger
	// RebroadcastInterval is how often go-ds-crdt re-announces heads that
	// nobody else announced (default 1 minute).
	RebroadcastInterval time.Duration
	// NumWorkers merge DAG blocks (default 1). Keep it at 1: in go-ds-crdt
	// v0.6.8 a tombstone merged by one worker races the merge of the element
	// it removes by another (putTombs does not take the lock putElems takes),
	// which leaves replicas with the same heads and different values. Fetches
	// stay parallel: each worker hands a block's children to a goroutine.
	NumWorkers int
	// DAGSyncerTimeout bounds a DAG fetch (default 2 minutes).
	DAGSyncerTimeout time.Duration
	// BatchOps is the most operations an import puts in one delta (default
	// 400). go-ds-crdt recomputes the size of the whole pending delta on
	// every batched put, so a batch costs O(n^2): measured on 10,000
	// contacts, 1,000 ops a delta gave ~2,200 records/s, 400 ~3,000 and 200
	// ~4,200; fewer, larger deltas make a faster DAG walk for a fresh node.
	BatchOps int
	// BatchBytes is the most encoded bytes an import puts in one delta
	// (default 512 KiB, half of go-ds-crdt's 1 MiB auto-commit threshold, so
	// that a delta is never split behind our back).
	BatchBytes int
	// Now reads the physical clock (default time.Now).
	Now func() time.Time
	// Recover: the store was not closed cleanly; before go-ds-crdt opens it,
	// blocks merged but not linked to the heads are made heads again (see
	// recoverOrphans). Run Repair afterwards: until then Stats says Dirty.
	Recover bool
	// Trust, if set, accepts only what members of the network wrote, and
	// signs this node's operations (see Trust). nil: an open network.
	Trust *Trust
	// CheckRoom, if set, is asked before every local write (see CheckRoom).
	CheckRoom CheckRoom
	// HasBlock, if set, says whether a block is held here, for Check
	// (default: read it through the DAG service, waiting up to a second).
	HasBlock HasBlock
	// OnChange, if set, is called (outside every lock) with the collection
	// and escaped record id of each operation merged, local or remote.
	OnChange func(collection, escapedID string)
	// HistoryKeep is how many superseded values per field a record keeps
	// when the store moves to a new epoch (default 10; 0 keeps none).
	HistoryKeep int
	// OnEpoch, if set, is called once the store moved to a new epoch (it
	// compacted, or adopted a peer's), after the old one was dropped.
	OnEpoch func(EpochReport)
	// AdoptTimeout bounds moving to an epoch a peer announced (default 10
	// minutes).
	AdoptTimeout time.Duration
	// DropPrefix, if set, deletes every key of the datastore under a prefix
	// at once (badger's DropPrefix, without a delete per key in its value
	// log): an old epoch's namespace is dropped with it. Default: the keys
	// are deleted in batches.
	DropPrefix func(ctx context.Context, prefix string) error

	// Journal keeps a journal of every merged write of a user collection
	// (see journal.go), for a consumer that acts on each change (workflows).
	Journal bool

	// Channel names the channel this store holds (docs/design/channels.md):
	// "" is the everyone store, which holds Ferry's own collections and
	// every collection without routing. A channel store holds the records
	// routed to its channel, under its own Root.
	Channel string
	// Authority, for a channel store, is the node's everyone store: members,
	// roles, schema and grants are read from it. Required with Channel.
	Authority *Store

	// side: the store is the namespace of an epoch being built (see
	// Store.openSide), not a node's store.
	side *Epoch
}

// DefaultOptions returns the defaults documented on each field.
func DefaultOptions() Options {
	return Options{
		Root:                DefaultRoot,
		Namespace:           DefaultRoot.ChildString("crdt"),
		Logger:              slog.Default(),
		RebroadcastInterval: time.Minute,
		NumWorkers:          1,
		DAGSyncerTimeout:    2 * time.Minute,
		BatchOps:            400,
		BatchBytes:          512 << 10,
		Now:                 time.Now,
		HistoryKeep:         10,
		AdoptTimeout:        10 * time.Minute,
	}
}

func (o *Options) validate() error {
	if o.Root == (ds.Key{}) {
		o.Root = DefaultRoot
	}
	if o.Namespace == (ds.Key{}) {
		o.Namespace = o.Root.ChildString("crdt")
	}
	switch {
	case o.Writer == "" || strings.ContainsAny(o.Writer, "/"):
		return fmt.Errorf("invalid writer id %q", o.Writer)
	case o.Logger == nil:
		return errors.New("nil logger")
	case o.RebroadcastInterval <= 0, o.NumWorkers <= 0, o.DAGSyncerTimeout <= 0:
		return errors.New("rebroadcast interval, workers and DAG timeout must be positive")
	case o.BatchOps <= 0 || o.BatchBytes <= 0 || o.BatchBytes > 900<<10:
		return errors.New("batch limits must be positive and BatchBytes at most 900 KiB")
	case o.Now == nil:
		return errors.New("nil clock")
	case o.HistoryKeep < 0 || o.HistoryKeep > 1000:
		return errors.New("history kept per field must be between 0 and 1000")
	}
	if o.Channel != "" {
		if err := schema.CheckChannelName(o.Channel); err != nil {
			return err
		}
		if o.Authority == nil || o.Authority.opts.Channel != "" {
			return fmt.Errorf("channel %s: a channel store needs the everyone store as its authority", o.Channel)
		}
		if o.Root == DefaultRoot {
			return fmt.Errorf("channel %s: a channel store needs a root of its own", o.Channel)
		}
		if a := o.Authority.opts; a.Writer != o.Writer || (a.Trust == nil) != (o.Trust == nil) {
			return fmt.Errorf("channel %s: a channel store has its authority's writer and trust model", o.Channel)
		}
	}
	if o.Trust != nil {
		return o.Trust.validate()
	}
	return nil
}

// Store is a replicated store of records.
type Store struct {
	opts  Options
	roots roots
	log   *slog.Logger
	base  ds.Batching
	dag   ipld.DAGService
	clock *Clock

	// engine is go-ds-crdt. It is replaced (closed and opened again over
	// the same datastore) when a local write failed half-way, since its
	// memory (pending delta, heads) may then differ from the disk; see
	// resetEngine. Use eng().
	engine   atomic.Pointer[dscrdt.Datastore]
	observed *observedStore
	bcast    *lenientBroadcaster // nil without network
	copts    *dscrdt.Options

	health health

	// writeMu serialises writers: go-ds-crdt batches share one pending
	// delta, so only one batch may be open at a time.
	writeMu sync.Mutex

	schemaMu    sync.Mutex
	schemaCache *schema.Schema
	schemaStale atomic.Bool

	rolesMu    sync.Mutex
	rolesCache map[string]string
	rolesStale atomic.Bool

	membersMu    sync.Mutex
	membersCache map[string]Member
	membersStale atomic.Bool
	// grantState caches the folded _grants (the everyone store's); deps
	// are the channel stores whose authority this store is (authority.go).
	grantState grantState
	deps       dependents
	// badSig holds the keys of merged operations whose signature failed.
	badSig sync.Map

	digest digestState
	unique uniqueState
	dups   dupState

	// migration is what opening a store of the previous format did (nil:
	// nothing to migrate).
	migration *MigrationReport

	// ns is the namespace of the current epoch, epochInfo its manifest
	// (nil: the first epoch). Both change together, under writeMu, when
	// the store moves to a new epoch (see switchEpoch).
	ns        atomic.Pointer[ds.Key]
	epochInfo atomic.Pointer[EpochInfo]
	epochs    epochState

	malformed atomic.Uint64
	loggedBad sync.Map
	closeOnce sync.Once
	closeErr  error
}

// clockKey holds the highest timestamp this node issued or saw, outside the
// replicated namespace, so the clock never runs backwards across restarts.
var clockKey = ds.NewKey("/ferry/local/hlc")

// New opens the replicated store on base, fetching blocks through dag and
// announcing heads through bcast (nil: no network).
func New(ctx context.Context, base ds.Batching, dag ipld.DAGService, bcast dscrdt.Broadcaster, opts Options) (*Store, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{opts: opts, log: opts.Logger, base: base, dag: dag, roots: rootsOf(opts.Root)}
	s.schemaStale.Store(true)
	s.rolesStale.Store(true)
	s.membersStale.Store(true)
	s.grantState.stale.Store(true)

	var last Timestamp
	switch b, err := base.Get(ctx, clockKey); {
	case err == nil && len(b) == 8:
		last = Timestamp(binary.BigEndian.Uint64(b))
	case err != nil && !errors.Is(err, ds.ErrNotFound):
		return nil, fmt.Errorf("open store: read clock: %w", err)
	}
	s.clock = NewClock(opts.Now, last)
	if opts.Authority != nil {
		// One clock per node: a write into a channel is newer than every
		// grant this node had seen when it wrote it.
		s.clock = opts.Authority.clock
		s.clock.Observe(last)
	}

	migrating := false
	if opts.side == nil {
		var err error
		if migrating, err = s.prepareFormat(ctx); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		info, err := loadEpoch(ctx, base, s.roots.epoch)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		s.setEpoch(info)
	} else {
		ns := opts.Namespace
		s.ns.Store(&ns)
		s.epochInfo.Store(&EpochInfo{Epoch: *opts.side})
	}
	if opts.Trust != nil {
		if err := s.loadBadSigs(ctx); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	dirty, err := base.Has(ctx, s.layout().dirty())
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if (opts.Recover || dirty) && !migrating {
		// A store that cannot be recovered now (a full disk) still opens,
		// to be read: the repair, which recovers first, is tried again
		// until it succeeds (Store.Repair).
		orphans, err := s.recoverOrphans(ctx)
		if err != nil {
			s.log.Error("recovering blocks merged before a crash failed: the store needs repair", "err", err)
			s.health.fail(fmt.Sprintf("recovery after a crash could not be written (%v)", err), false)
		}
		if len(orphans) > 0 {
			s.log.Warn("blocks merged before a crash but never made heads: heads again", "blocks", orphans)
		}
		if opts.Recover {
			// The blocks a crash left unfetched below the heads are
			// fetched only by a walk of the DAG: the store says it needs
			// one until a Repair made it. A channel store opened after
			// the node's first repair once kept such a gap for good (chaos
			// seed 0x5: a laptop lost a peer's writes).
			s.health.fail("not closed cleanly: its DAG is walked again", false)
		}
	}
	copts := dscrdt.DefaultOptions()
	copts.Logger = &engineLogger{log: opts.Logger.With("component", "go-ds-crdt")}
	copts.RebroadcastInterval = opts.RebroadcastInterval
	copts.NumWorkers = opts.NumWorkers
	copts.DAGSyncerTimeout = opts.DAGSyncerTimeout
	// Changes are observed on the datastore, after they are written, not
	// from go-ds-crdt's hooks (see observedStore).
	s.copts = copts
	s.observed = s.newObserved()
	if bcast != nil {
		s.bcast = &lenientBroadcaster{Broadcaster: bcast, log: opts.Logger, epoch: s.Epoch}
		if opts.side == nil {
			s.bcast.foreign = s.foreignHeads
		}
	}
	engine, err := s.openEngine()
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.engine.Store(engine)
	if migrating {
		if err := s.finishMigration(ctx); err != nil {
			_ = engine.Close()
			return nil, fmt.Errorf("open store: migrate from store format %d: %w", LegacyFormat, err)
		}
	}
	if opts.Authority != nil {
		opts.Authority.deps.add(s)
	}
	if opts.side != nil {
		return s, nil
	}
	s.epochs.init()
	if err := s.resumeDrops(ctx); err != nil {
		s.log.Warn("dropping an old epoch did not finish; tried again at the next start", "err", err)
	}
	return s, nil
}

// newObserved wraps the datastore for go-ds-crdt in the current epoch's
// namespace.
func (s *Store) newObserved() *observedStore {
	observed := newObservedStore(s.base, s.namespace(), s.keyChanged)
	if s.opts.Trust != nil {
		observed.vet = s.vetElements
	}
	observed.failed = s.writeFailed
	observed.journal = s.opts.Journal && s.opts.side == nil
	return observed
}

// openEngine opens go-ds-crdt over the store's datastore.
func (s *Store) openEngine() (*dscrdt.Datastore, error) {
	var bcast dscrdt.Broadcaster
	if s.bcast != nil {
		bcast = s.bcast
	}
	return s.openEngineWith(bcast)
}

// openEngineWith opens go-ds-crdt with bcast (nil: offline, nothing
// merges).
func (s *Store) openEngineWith(bcast dscrdt.Broadcaster) (*dscrdt.Datastore, error) {
	return dscrdt.New(s.observed, s.namespace(), s.dag, bcast, s.copts)
}

// eng returns the current go-ds-crdt engine.
func (s *Store) eng() *dscrdt.Datastore { return s.engine.Load() }

// keyChanged is told of every visible operation added or removed, once it
// is written. It runs inside go-ds-crdt's merge, under its lock: it must not
// read or write the store. It advances the clock past every operation seen
// and notes what changed.
func (s *Store) keyChanged(k string) {
	kp, err := parseOpKey(k)
	if err != nil {
		return
	}
	s.clock.Observe(kp.Op.Time)
	s.digest.markDirty(kp.Collection, kp.EscapedID)
	s.unique.markDirty(kp.Collection, kp.EscapedID)
	s.dups.markDirty(kp.Collection, kp.EscapedID)
	switch kp.Collection {
	case SchemaCollection:
		s.schemaStale.Store(true)
	case NodesCollection:
		s.rolesStale.Store(true)
	case MembersCollection:
		s.membersStale.Store(true)
		s.rolesStale.Store(true)
	}
	s.authorityKeyChanged(kp.Collection)
	if s.opts.OnChange != nil {
		s.opts.OnChange(kp.Collection, kp.EscapedID)
	}
}

// Close stops the store's workers. The broadcaster must be stopped first
// (its Next must return), or Close waits for it.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if a := s.opts.Authority; a != nil {
			a.deps.remove(s)
		}
		s.epochs.close()
		s.closeErr = s.eng().Close()
		if err := s.persistClock(context.Background()); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

// Writer returns this store's writer id.
func (s *Store) Writer() string { return s.opts.Writer }

// Clock returns the store's hybrid logical clock.
func (s *Store) Clock() *Clock { return s.clock }

func (s *Store) persistClock(ctx context.Context) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(s.clock.Last()))
	if err := s.base.Put(ctx, clockKey, b[:]); err != nil {
		return fmt.Errorf("persist clock: %w", err)
	}
	return nil
}

// Stats is what the engine says about replication state.
type Stats struct {
	Heads      []cid.Cid
	MaxHeight  uint64
	QueuedJobs int
	// Dirty: the DAG may be incomplete here (go-ds-crdt's dirty bit, or
	// RepairNeeded).
	Dirty bool
	// RepairNeeded: a merge or a write failed (a full disk, a merge cut
	// short) and the store has not been repaired since; RepairReason says
	// what failed, in words. Known even when go-ds-crdt could not persist
	// its dirty bit.
	RepairNeeded bool
	RepairReason string
	// FailedWrites counts the writes to the datastore that failed since
	// the store opened.
	FailedWrites uint64
	// Malformed counts operations read from the store that did not decode
	// (sent by something that is not a Ferry node); they are ignored.
	Malformed uint64
}

// Stats returns the current heads, DAG height and health.
func (s *Store) Stats(ctx context.Context) Stats {
	eng := s.eng()
	st := eng.InternalStats(ctx)
	h := s.health.get()
	return Stats{
		Heads:        st.Heads,
		MaxHeight:    st.MaxHeight,
		QueuedJobs:   st.QueuedJobs,
		Dirty:        eng.IsDirty(ctx) || h.needed,
		RepairNeeded: h.needed,
		RepairReason: h.reason,
		FailedWrites: h.failures,
		Malformed:    s.malformed.Load(),
	}
}

// Processed reports whether go-ds-crdt has merged block c (its children may
// still be queued: see Stats.QueuedJobs).
func (s *Store) Processed(ctx context.Context, c cid.Cid) (bool, error) {
	return s.base.Has(ctx, s.layout().processed().ChildString(blockKey(c)))
}

// Heads returns the current DAG heads, to announce to a peer.
func (s *Store) Heads(ctx context.Context) ([]cid.Cid, error) {
	return s.eng().InternalStats(ctx).Heads, nil
}
