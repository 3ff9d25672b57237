package crdt

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestGrantsTimeline: grants, ungrants and re-grants fold into intervals
// on every node; a laptop's own grant counts nowhere.
func TestGrantsTimeline(t *testing.T) {
	ctx := context.Background()
	tn := newGrantsNet(t, 3)
	a, b := tn.replicas[0], tn.replicas[1]
	at := func(d time.Duration) Timestamp { return TimestampOf(epoch.Add(d)) }

	if err := a.Grant(ctx, "B", "east", "north"); err != nil {
		t.Fatal(err)
	}
	setClocks(tn, 2*time.Minute)
	if err := a.Ungrant(ctx, "B", "east"); err != nil {
		t.Fatal(err)
	}
	setClocks(tn, 3*time.Minute)
	if err := a.Grant(ctx, "B", "east"); err != nil {
		t.Fatal(err)
	}
	// Granting what is granted writes nothing.
	heads := headsKey(a)
	if err := a.Grant(ctx, "B", "east", "east"); err != nil || headsKey(a) != heads {
		t.Errorf("grant again: %v, heads changed %t", err, headsKey(a) != heads)
	}
	if err := a.Grant(ctx, "C", "west"); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)

	for _, r := range tn.all() {
		g, err := r.Grants(ctx)
		if err != nil {
			t.Fatal(err)
		}
		is := g.Intervals("B", "east")
		if len(is) != 2 || is[0].From < at(time.Minute) || is[0].Until < at(2*time.Minute) || is[0].Until >= at(3*time.Minute) ||
			is[1].From < at(3*time.Minute) || is[1].Until != 0 {
			t.Errorf("%s: intervals of B in east %+v", r.writer, is)
		}
		for d, want := range map[time.Duration]bool{0: false, 90 * time.Second: true, 150 * time.Second: false, 4 * time.Minute: true} {
			if g.At("B", "east", at(d)) != want {
				t.Errorf("%s: B granted east at +%s: %t, want %t", r.writer, d, !want, want)
			}
		}
		if !g.At("B", "north", at(4*time.Minute)) || g.At("B", "west", at(4*time.Minute)) || g.At("A", "east", at(4*time.Minute)) {
			t.Errorf("%s: At north/west/office wrong", r.writer)
		}
		if got := g.Current("B"); !slices.Equal(got, []string{"east", "north"}) {
			t.Errorf("%s: current grants of B %v", r.writer, got)
		}
		if got := g.Peers("west"); !slices.Equal(got, []string{"C"}) {
			t.Errorf("%s: peers of west %v", r.writer, got)
		}
		if got := g.All(); len(got) != 2 || !slices.Equal(got["B"], []string{"east", "north"}) || !slices.Equal(got["C"], []string{"west"}) {
			t.Errorf("%s: all grants %v", r.writer, got)
		}
		if !r.Granted(ctx, "B", "east") || r.Granted(ctx, "B", "west") || !r.Granted(ctx, "A", "west") || r.Granted(ctx, "Z", "east") {
			t.Errorf("%s: Granted wrong", r.writer)
		}
	}

	// A laptop's grant, forced past checkWritable, counts nowhere.
	if err := b.Grant(ctx, "C", "east"); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "only an office grants channels") {
		t.Errorf("laptop grants: %v", err)
	}
	forged := forge(t, b.Store, GrantsCollection, "B/south/"+b.clock.Now().String(), map[string]any{"peer": "B", "channel": "south", "granted": true}, "B", tn.keys["B"])
	tn.waitConverged(10 * time.Second)
	for _, r := range tn.all() {
		waitFor(t, 10*time.Second, "the forged grant to be ignored", func() bool { return ignoredFor(t, r.Store, forged) == ReasonRole })
		g, err := r.Grants(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if g.At("B", "south", at(time.Hour)) || slices.Contains(g.Current("B"), "south") || len(g.Peers("south")) != 0 {
			t.Errorf("%s: the laptop's own grant counts", r.writer)
		}
		chans, err := r.Channels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(chans, "south") {
			t.Errorf("%s: channels %v name the forged one", r.writer, chans)
		}
	}

	// Refusals.
	for _, c := range []struct {
		peer, channel, want string
	}{
		{"A", "east", "an office holds every channel"},
		{"Z", "east", "not a member"},
		{"B", "East", "bad channel name"},
		{"B", "a/b", "bad channel name"},
	} {
		if err := a.Grant(ctx, c.peer, c.channel); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("grant %s %s: %v, want %q", c.peer, c.channel, err, c.want)
		}
	}
	if err := a.Grant(ctx, "B"); err == nil {
		t.Error("grant without a channel accepted")
	}
	if err := a.RevokeMember(ctx, "C"); err != nil {
		t.Fatal(err)
	}
	if err := a.Grant(ctx, "C", "east"); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("grant a revoked member: %v", err)
	}
	// Its grants can still be ended.
	if err := a.Ungrant(ctx, "C", "west"); err != nil {
		t.Errorf("ungrant a revoked member: %v", err)
	}
	if a.Granted(ctx, "C", "west") {
		t.Error("a revoked member is granted")
	}
}

func TestGrantsNeedASecuredNetwork(t *testing.T) {
	ctx := context.Background()
	tn := newTestNetWithSchema(t, 1, grantsSchema)
	a := tn.replicas[0]
	if err := a.Grant(ctx, "B", "east"); err == nil || !strings.Contains(err.Error(), "secured network") {
		t.Errorf("grant in an open network: %v", err)
	}
	if !a.Granted(ctx, "B", "east") {
		t.Error("in an open network every peer holds every channel")
	}
	// Routing works: a channel store holds deals, not contacts.
	east := newHub(tn, "east").open(t, a)
	if _, err := east.Put(ctx, "deals", "d1", map[string]any{"territory": "east"}); err != nil {
		t.Fatal(err)
	}
	if _, err := east.Put(ctx, "contacts", "c1", map[string]any{"last_name": "X"}); !errors.Is(err, ErrForbidden) {
		t.Errorf("unrouted collection in a channel store: %v", err)
	}
}

func TestChannels(t *testing.T) {
	ctx := context.Background()
	tn := newGrantsNet(t, 2)
	a, b := tn.replicas[0], tn.replicas[1]
	if err := a.RegisterChannel(ctx, "archive"); err != nil {
		t.Fatal(err)
	}
	heads := headsKey(a)
	if err := a.RegisterChannel(ctx, "archive"); err != nil || headsKey(a) != heads {
		t.Errorf("register again: %v, heads changed %t", err, headsKey(a) != heads)
	}
	if err := a.Grant(ctx, "B", "south"); err != nil {
		t.Fatal(err)
	}
	if err := a.Ungrant(ctx, "B", "south"); err != nil {
		t.Fatal(err)
	}
	if err := b.RegisterChannel(ctx, "mine"); !errors.Is(err, ErrForbidden) {
		t.Errorf("laptop registers a channel: %v", err)
	}
	if err := a.RegisterChannel(ctx, "Bad"); err == nil {
		t.Error("bad channel name registered")
	}
	tn.waitConverged(10 * time.Second)
	// Registered, ever granted, routed collections' enum values and
	// defaults (deals: the default channel; visits: hq).
	want := []string{"archive", "east", "hq", "north", "south", "unassigned", "west"}
	east := newHub(tn, "east").open(t, b)
	for _, s := range []*Store{a.Store, b.Store, east} {
		got, err := s.Channels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s %q: channels %v, want %v", s.Writer(), s.opts.Channel, got, want)
		}
	}
}

// TestTrustChannelNotGranted: an office A and a laptop B granted east,
// each with its everyone store and its stores of east and west.
func TestTrustChannelNotGranted(t *testing.T) {
	ctx := context.Background()
	tn := newGrantsNet(t, 2)
	a, b := tn.replicas[0], tn.replicas[1]
	if err := a.Grant(ctx, "B", "east"); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	eastHub, westHub := newHub(tn, "east"), newHub(tn, "west")
	aEast, bEast := eastHub.open(t, a), eastHub.open(t, b)
	aWest, bWest := westHub.open(t, a), westHub.open(t, b)

	// Granted east: B's write counts on both nodes.
	if _, err := bEast.Put(ctx, "deals", "d1", map[string]any{"territory": "east", "title": "from B"}); err != nil {
		t.Fatal(err)
	}
	eastHub.converged(t)
	for _, s := range []*Store{aEast, bEast} {
		if v := getValue(t, s, "deals", "d1", "title"); v != "from B" {
			t.Errorf("%s east: d1 title %v", s.Writer(), v)
		}
		if ig, _ := s.Ignored(ctx); len(ig) != 0 {
			t.Errorf("%s east: ignored %v", s.Writer(), ig)
		}
	}

	// Not granted west: refused locally, ignored everywhere if forced.
	_, err := bWest.Put(ctx, "deals", "w1", map[string]any{"territory": "west", "title": "forced"})
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "a laptop granted east may not write into channel west") {
		t.Fatalf("laptop writes into a channel it is not granted: %v", err)
	}
	forced := forge(t, bWest, "deals", "w1", map[string]any{"territory": "west", "title": "forced"}, "B", tn.keys["B"])
	westHub.converged(t)
	expectIgnored(t, forced, ReasonNotGranted, aWest, bWest)
	for _, s := range []*Store{aWest, bWest} {
		if v := getValue(t, s, "deals", "w1", "title"); v != nil {
			t.Errorf("%s west: w1 shows %v", s.Writer(), v)
		}
	}

	// The same write vouched for by the office counts (a move would copy
	// it so).
	eid, _ := EscapeID("w1")
	key := writeKey("deals", eid, forced)
	stored, err := aWest.eng().Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := parseOpKey(key.String())
	w, err := decodeWrite(kp, stored)
	if err != nil {
		t.Fatal(err)
	}
	vouched, err := aWest.vouch(key.String(), w)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := aWest.eng().Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Put(ctx, key, vouched); err != nil {
		t.Fatal(err)
	}
	if err := batch.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	westHub.converged(t)
	for _, s := range []*Store{aWest, bWest} {
		waitFor(t, 10*time.Second, "the vouched write to count on "+s.Writer(), func() bool {
			return getValue(t, s, "deals", "w1", "title") == "forced" && ignoredFor(t, s, forced) == ""
		})
	}

	// Ungranted while away: B's later write into east counts nowhere; its
	// earlier one stays.
	tn.setOnline(1, false)
	setClocks(tn, 2*time.Minute)
	if err := a.Ungrant(ctx, "B", "east"); err != nil {
		t.Fatal(err)
	}
	b.clock.Set(epoch.Add(3 * time.Minute))
	late := putIn(t, bEast, "deals", "d2", map[string]any{"territory": "east", "title": "late"})
	tn.setOnline(1, true)
	eastHub.exchange()
	tn.waitConverged(10 * time.Second)
	eastHub.converged(t)
	expectIgnored(t, late, ReasonNotGranted, aEast, bEast)
	for _, s := range []*Store{aEast, bEast} {
		if v := getValue(t, s, "deals", "d2", "title"); v != nil {
			t.Errorf("%s east: d2 shows %v", s.Writer(), v)
		}
		if v := getValue(t, s, "deals", "d1", "title"); v != "from B" {
			t.Errorf("%s east: d1 title %v", s.Writer(), v)
		}
	}
	if _, err := bEast.Put(ctx, "deals", "d3", map[string]any{"territory": "east"}); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "a laptop granted no channel may not write into channel east") {
		t.Errorf("ungranted laptop writes: %v", err)
	}
	// The office writes into every channel.
	if _, err := aWest.Put(ctx, "deals", "w2", map[string]any{"territory": "west"}); err != nil {
		t.Errorf("office writes into west: %v", err)
	}
}

// TestChannelStoreHoldsOnlyRoutedCollections: a channel store refuses
// writes of Ferry's own collections and of unrouted ones; forced, they are
// ignored everywhere.
func TestChannelStoreHoldsOnlyRoutedCollections(t *testing.T) {
	ctx := context.Background()
	tn := newGrantsNet(t, 2)
	a, b := tn.replicas[0], tn.replicas[1]
	if err := a.Grant(ctx, "B", "east"); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	hub := newHub(tn, "east")
	aEast, bEast := hub.open(t, a), hub.open(t, b)

	for _, s := range []*Store{aEast, bEast} {
		if _, err := s.Put(ctx, "contacts", "c1", map[string]any{"last_name": "X"}); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "not routed") {
			t.Errorf("%s: unrouted collection in a channel store: %v", s.Writer(), err)
		}
		if err := s.SetNodeInfo(ctx, "x", RoleLaptop); !errors.Is(err, ErrForbidden) {
			t.Errorf("%s: node info in a channel store: %v", s.Writer(), err)
		}
	}
	if err := aEast.AddMember(ctx, "Z", "z", RoleLaptop); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "not held in a channel") {
		t.Errorf("membership in a channel store: %v", err)
	}
	sc, err := a.Schema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aEast.ApplySchema(ctx, sc); !errors.Is(err, ErrForbidden) {
		t.Errorf("schema in a channel store: %v", err)
	}
	// What a channel store reads of members, schema and grants is its
	// authority's.
	if ms, err := bEast.Members(ctx); err != nil || len(ms) != 2 {
		t.Errorf("members read in a channel store: %v %v", ms, err)
	}
	if c, err := bEast.Collection(ctx, "deals"); err != nil || c.Channel == nil || c.Channel.Field != "territory" {
		t.Errorf("schema read in a channel store: %+v %v", c, err)
	}
	if !bEast.Granted(ctx, "B", "east") {
		t.Error("grants read in a channel store")
	}
	// Grants and channels written through a channel store go to the
	// everyone store.
	if err := aEast.Grant(ctx, "B", "north"); err != nil {
		t.Fatal(err)
	}
	if g, _ := a.Grants(ctx); !slices.Equal(g.Current("B"), []string{"east", "north"}) {
		t.Errorf("grant through a channel store: %v", g.Current("B"))
	}

	putIn(t, bEast, "deals", "d1", map[string]any{"territory": "east", "title": "t"})
	unrouted := forge(t, bEast, "contacts", "c1", map[string]any{"last_name": "Forced"}, "B", tn.keys["B"])
	member := forge(t, aEast, MembersCollection, "Z", map[string]any{"name": "z", "role": RoleOffice}, "A", tn.keys["A"])
	hub.converged(t)
	expectIgnored(t, unrouted, ReasonWrongStore, aEast, bEast)
	expectIgnored(t, member, ReasonWrongStore, aEast, bEast)
	for _, s := range []*Store{aEast, bEast} {
		if v := getValue(t, s, "contacts", "c1", "last_name"); v != nil {
			t.Errorf("%s east: contacts/c1 shows %v", s.Writer(), v)
		}
		if _, ok, err := s.Member(ctx, "Z"); ok || err != nil {
			t.Errorf("%s east: Z is a member (%v)", s.Writer(), err)
		}
	}
	if ig, _ := a.Ignored(ctx); len(ig) != 0 {
		t.Errorf("the everyone store ignores %v", ig)
	}
}

// TestChannelAuthorityInvalidation: a channel store counts its writes by
// what its authority says now. A laptop away while it is revoked, or
// ungranted, writes on: once its everyone store hears of it (the channel
// store itself has synced nothing), its channel store ignores those later
// writes. A write made before its writer's grant stays ignored after it.
func TestChannelAuthorityInvalidation(t *testing.T) {
	ctx := context.Background()
	tn := newGrantsNet(t, 3)
	a, b, c := tn.replicas[0], tn.replicas[1], tn.replicas[2]
	if err := a.Grant(ctx, "B", "east"); err != nil {
		t.Fatal(err)
	}
	if err := a.Grant(ctx, "C", "east"); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	hub := newHub(tn, "east")
	aEast, bEast, cEast := hub.open(t, a), hub.open(t, b), hub.open(t, c)
	putIn(t, bEast, "deals", "d1", map[string]any{"territory": "east", "title": "b1"})
	hub.converged(t)
	putIn(t, cEast, "deals", "d2", map[string]any{"territory": "east", "title": "c1"})
	hub.converged(t)

	tn.setOnline(1, false)
	tn.setOnline(2, false)
	setClocks(tn, 2*time.Minute)
	if err := a.RevokeMember(ctx, "B"); err != nil {
		t.Fatal(err)
	}
	if err := a.Ungrant(ctx, "C", "east"); err != nil {
		t.Fatal(err)
	}
	setClocks(tn, 3*time.Minute)
	revoked := putIn(t, bEast, "deals", "d1", map[string]any{"title": "b2"})
	ungranted := putIn(t, cEast, "deals", "d2", map[string]any{"title": "c2"})
	for s, want := range map[*Store]string{bEast: "b2", cEast: "c2"} {
		id := map[*Store]string{bEast: "d1", cEast: "d2"}[s]
		if v := getValue(t, s, "deals", id, "title"); v != want {
			t.Fatalf("%s before hearing: %v", s.Writer(), v)
		}
		if ig, _ := s.Ignored(ctx); len(ig) != 0 {
			t.Fatalf("%s ignores %v before hearing", s.Writer(), ig)
		}
	}
	indexEpochs := func(s *Store) [2]uint64 {
		s.unique.dirtyMu.Lock()
		defer s.unique.dirtyMu.Unlock()
		s.dups.dirtyMu.Lock()
		defer s.dups.dirtyMu.Unlock()
		return [2]uint64{s.unique.epoch, s.dups.epoch}
	}
	before := indexEpochs(bEast)
	// Back: the everyone stores sync; nothing is written in east, so the
	// east stores merge nothing.
	tn.setOnline(1, true)
	tn.setOnline(2, true)
	tn.waitConverged(10 * time.Second)
	expectIgnored(t, revoked, ReasonRevoked, bEast)
	expectIgnored(t, ungranted, ReasonNotGranted, cEast)
	if after := indexEpochs(bEast); after[0] <= before[0] || after[1] <= before[1] {
		t.Errorf("B east: unique and duplicate indexes not invalidated: %v -> %v", before, after)
	}
	if v := getValue(t, bEast, "deals", "d1", "title"); v != "b1" {
		t.Errorf("B east: d1 title %v after hearing of the revocation", v)
	}
	if v := getValue(t, cEast, "deals", "d2", "title"); v != "c1" {
		t.Errorf("C east: d2 title %v after hearing of the ungrant", v)
	}
	hub.exchange()
	hub.converged(t)
	expectIgnored(t, revoked, ReasonRevoked, aEast, bEast, cEast)
	expectIgnored(t, ungranted, ReasonNotGranted, aEast, bEast, cEast)

	// Grants are by time: C's write made before its new grant stays
	// ignored; one made after counts.
	setClocks(tn, 4*time.Minute)
	early := forge(t, cEast, "deals", "d3", map[string]any{"territory": "east", "title": "early"}, "C", tn.keys["C"])
	hub.converged(t)
	expectIgnored(t, early, ReasonNotGranted, aEast, cEast)
	setClocks(tn, 5*time.Minute)
	if err := a.Grant(ctx, "C", "east"); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	after := putIn(t, cEast, "deals", "d4", map[string]any{"territory": "east", "title": "after"})
	hub.converged(t)
	for _, s := range []*Store{aEast, cEast} {
		if r := ignoredFor(t, s, early); r != ReasonNotGranted {
			t.Errorf("%s: the write made before the grant: ignored %q", s.Writer(), r)
		}
		if v := getValue(t, s, "deals", "d3", "title"); v != nil {
			t.Errorf("%s: d3 shows %v", s.Writer(), v)
		}
		if r := ignoredFor(t, s, after); r != "" || getValue(t, s, "deals", "d4", "title") != "after" {
			t.Errorf("%s: the write made after the grant: ignored %q", s.Writer(), r)
		}
	}
}

// TestMoveCarriesAConflictVouched: a record in conflict, edited by a laptop
// granted east only, moves to west with both candidates, and the laptop's
// writes count there because the office vouched for them.
func TestMoveCarriesAConflictVouched(t *testing.T) {
	ctx := context.Background()
	tn := newGrantsNet(t, 2)
	a, b := tn.replicas[0], tn.replicas[1]
	if err := a.Grant(ctx, "B", "east"); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	eastHub, westHub := newHub(tn, "east"), newHub(tn, "west")
	aEast, bEast := eastHub.open(t, a), eastHub.open(t, b)
	aWest := westHub.open(t, a)
	putIn(t, bEast, "deals", "d1", map[string]any{"territory": "east", "title": "v0"})
	eastHub.converged(t)
	// Concurrent edits of the title: a conflict.
	tn.setOnline(1, false)
	putIn(t, aEast, "deals", "d1", map[string]any{"title": "from A"})
	putIn(t, bEast, "deals", "d1", map[string]any{"title": "from B"})
	tn.setOnline(1, true)
	eastHub.exchange()
	eastHub.converged(t)
	rec, err := aEast.Get(ctx, "deals", "d1")
	if err != nil || len(rec.Fields["title"].Candidates) != 2 {
		t.Fatalf("no conflict on d1.title before the move: %+v %v", rec, err)
	}
	// The laptop hands it to west; the office moves it.
	putIn(t, bEast, "deals", "d1", map[string]any{"territory": "west"})
	eastHub.converged(t)
	if _, err := aEast.Move(ctx, aWest, "deals", "d1"); err != nil {
		t.Fatal(err)
	}
	eastHub.converged(t)
	rec, err = aWest.Get(ctx, "deals", "d1")
	if err != nil {
		t.Fatal(err)
	}
	var cands []any
	for _, c := range rec.Fields["title"].Candidates {
		cands = append(cands, c.Value)
	}
	if len(cands) != 2 || rec.Fields["territory"].Value != "west" {
		t.Errorf("d1 in west: title candidates %v, territory %v; want both candidates", cands, rec.Fields["territory"].Value)
	}
	if ig, _ := aWest.Ignored(ctx); len(ig) != 0 {
		t.Errorf("west ignores the laptop's moved writes: %+v", ig)
	}
	for _, s := range []*Store{aEast, bEast} {
		var mv *MovedError
		if _, err := s.Get(ctx, "deals", "d1"); !errors.As(err, &mv) || mv.To != "west" {
			t.Errorf("%s east: d1 %v, want moved to west", s.Writer(), err)
		}
	}
	// A laptop may not move a record: refused here, and a move op it forces
	// in is ignored everywhere (the record stays).
	putIn(t, bEast, "deals", "d2", map[string]any{"territory": "east", "title": "stays"})
	bWestLocal := newHub(tn, "west").open(t, b)
	if _, err := bEast.Move(ctx, bWestLocal, "deals", "d2"); !errors.Is(err, ErrForbidden) {
		t.Errorf("a laptop moving a record: %v, want ErrForbidden", err)
	}
	forged := forge(t, bEast, "deals", "d2", map[string]any{MovedField: "west"}, "B", tn.keys["B"])
	eastHub.converged(t)
	expectIgnored(t, forged, ReasonRole, aEast, bEast)
	for _, s := range []*Store{aEast, bEast} {
		if v := getValue(t, s, "deals", "d2", "title"); v != "stays" {
			t.Errorf("%s east: d2 after a forged move: %v", s.Writer(), v)
		}
	}
}

// TestWriteAfterAGrantFromAClockAhead: a laptop whose clock is behind the
// office's, and that lost its observation of the grant (a kill -9 before
// its clock was saved), still writes after its grant: the write counts.
func TestWriteAfterAGrantFromAClockAhead(t *testing.T) {
	ctx := context.Background()
	tn := newGrantsNet(t, 2)
	a, b := tn.replicas[0], tn.replicas[1]
	a.clock.Set(epoch.Add(10 * time.Minute)) // the office runs ahead
	if err := a.Grant(ctx, "B", "east"); err != nil {
		t.Fatal(err)
	}
	tn.waitConverged(10 * time.Second)
	eastHub := newHub(tn, "east")
	aEast, bEast := eastHub.open(t, a), eastHub.open(t, b)
	// What a restart after kill -9 leaves: the clock at the physical time.
	bEast.clock.mu.Lock()
	bEast.clock.last = 0
	bEast.clock.mu.Unlock()
	op := putIn(t, bEast, "deals", "d1", map[string]any{"territory": "east", "title": "after the grant"})
	eastHub.converged(t)
	for _, s := range []*Store{aEast, bEast} {
		if r := ignoredFor(t, s, op); r != "" {
			t.Errorf("%s: the laptop's write after its grant is ignored: %s", s.Writer(), r)
		}
		if v := getValue(t, s, "deals", "d1", "title"); v != "after the grant" {
			t.Errorf("%s: d1 title %v", s.Writer(), v)
		}
	}
}
