package main

// End-to-end tests of channels (docs/design/channels.md §0, §3.1): an
// office and laptops of a secured network, enrolled by invitation, each a
// real `ferry node` process on loopback; contacts routed by territory.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/ondisk"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
)

// channelsSchema routes contacts by territory; accounts go to everyone.
const channelsSchema = `collections:
  contacts:
    channel: {field: territory}
    fields:
      first_name: {type: string}
      last_name:  {type: string, required: true}
      phone:      {type: string}
      territory:  {type: string}
  accounts:
    fields:
      name: {type: string, required: true}
`

// chanCluster is a secured network: an office and laptops enrolled by
// invitation, with channelsSchema applied on the office and replicated.
type chanCluster struct {
	root      string
	officeDir string
	office    *nodeProc
	dirs      map[string]string // laptop name -> data dir
	laptops   map[string]*nodeProc
}

// startChanCluster starts an office, enrols the named laptops, applies
// channelsSchema on the office and starts the laptops.
func startChanCluster(t *testing.T, laptops ...string) *chanCluster {
	t.Helper()
	c := &chanCluster{root: t.TempDir(), dirs: map[string]string{}, laptops: map[string]*nodeProc{}}
	c.officeDir = initDir(t, c.root, "office", "--office", "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)))
	c.office = startNode(t, c.officeDir)
	for _, name := range laptops {
		c.dirs[name] = joinDir(t, c.root, name, c.officeDir, "--listen", "/ip4/127.0.0.1/tcp/0")
	}
	file := filepath.Join(c.root, "channels.yaml")
	if err := os.WriteFile(file, []byte(channelsSchema), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := mustFerry(t, c.officeDir, "schema", "apply", file); !strings.Contains(r.Stdout, "contacts.territory") {
		t.Fatalf("schema apply does not list what it applied:\n%s", r)
	}
	for _, name := range laptops {
		c.laptops[name] = startNode(t, c.dirs[name])
	}
	for _, name := range laptops {
		waitSchema(t, c.dirs[name])
	}
	return c
}

// channels runs `ferry channels --json`.
func channels(t *testing.T, dir string) (apijson.Channels, result) {
	t.Helper()
	r := mustFerry(t, dir, "channels", "--json")
	var cs apijson.Channels
	if err := json.Unmarshal([]byte(r.Stdout), &cs); err != nil {
		t.Fatalf("channels --json is not a Channels: %v\n%s", err, r)
	}
	return cs, r
}

// heldNames returns the names of the channels held (or being left).
func heldNames(cs apijson.Channels) []string {
	out := []string{}
	for _, ch := range cs.Held {
		out = append(out, ch.Name)
	}
	return out
}

func heldChannel(cs apijson.Channels, name string) (apijson.Channel, bool) {
	for _, ch := range cs.Held {
		if ch.Name == name {
			return ch, true
		}
	}
	return apijson.Channel{}, false
}

// listIDs runs `ferry list COLLECTION --json` and returns the ids shown.
func listIDs(t *testing.T, dir, collection string) ([]string, result) {
	t.Helper()
	r := mustFerry(t, dir, "list", collection, "--json")
	recs, _ := decodeLines(t, r.Stdout, r)
	ids := make([]string, 0, len(recs))
	for id := range recs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, r
}

// waitGrants waits until dir's node knows member's grants are want.
func waitGrants(t *testing.T, dir, member string, want ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s shows %s granted %v", filepath.Base(dir), member, want), func() (bool, string) {
		m, ok := memberNamed(members(t, dir), member)
		return ok && slices.Equal(m.Grants, want), fmt.Sprintf("%+v", m)
	})
}

// waitHolds waits until dir's node holds exactly the channels want (none
// being left) and returns its channels.
func waitHolds(t *testing.T, dir string, want ...string) apijson.Channels {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	var cs apijson.Channels
	eventually(t, fmt.Sprintf("%s holds %v", filepath.Base(dir), want), func() (bool, string) {
		var r result
		cs, r = channels(t, dir)
		for _, ch := range cs.Held {
			if ch.State != "held" {
				return false, r.String()
			}
		}
		return slices.Equal(heldNames(cs), want), r.String()
	})
	return cs
}

// waitStatusChannels waits until `status --json` on dir shows these held
// and granted-but-not-taken channels, and none being left.
func waitStatusChannels(t *testing.T, dir string, held, notTaken []string) apijson.Status {
	t.Helper()
	var st apijson.Status
	eventually(t, fmt.Sprintf("%s status shows channels %v, not taken %v", filepath.Base(dir), held, notTaken), func() (bool, string) {
		var r result
		st, r = status(t, dir)
		return r.Code == 0 && slices.Equal(st.Channels, held) && slices.Equal(st.ChannelsNotTaken, notTaken) &&
			len(st.ChannelsLeaving) == 0, r.String()
	})
	return st
}

// mustFail runs a command that must exit with code and say every one of
// msgs on stderr.
func mustFail(t *testing.T, dir string, code int, msgs []string, args ...string) result {
	t.Helper()
	r := ferry(t, dir, args...)
	ok := r.Code == code
	for _, m := range msgs {
		ok = ok && strings.Contains(r.Stderr, m)
	}
	if !ok {
		t.Errorf("want exit %d and %q on stderr:\n%s", code, msgs, r)
	}
	return r
}

// TestChannelGrantedLaptopHoldsOnlyItsChannel: a laptop granted east (by
// name) gets the east contacts and never the west ones; channels, members
// and status say so on both sides.
func TestChannelGrantedLaptopHoldsOnlyItsChannel(t *testing.T) {
	e2e(t)
	c := startChanCluster(t, "laptop-a")
	a := c.dirs["laptop-a"]

	r := mustFerry(t, c.officeDir, "grant", "laptop-a", "east")
	aID := mustStatus(t, a).PeerID
	if want := aID + " is granted: east\n"; r.Stdout != want {
		t.Errorf("grant printed %q, want %q", r.Stdout, want)
	}
	mustFerry(t, c.officeDir, "put", "accounts", "acme", "name=Acme")
	mustFerry(t, c.officeDir, "put", "contacts", "w1", "last_name=West One", "territory=west")
	mustFerry(t, c.officeDir, "put", "contacts", "e1", "last_name=East One", "territory=east")
	mustFerry(t, c.officeDir, "put", "contacts", "w2", "last_name=West Two", "territory=west")
	mustFerry(t, c.officeDir, "put", "contacts", "e2", "last_name=East Two", "territory=east")

	// The east contacts (e2 written after every west one) and the
	// unrouted account reach the laptop; the west ones never do.
	waitRecord(t, a, "contacts", "e1", map[string]any{"last_name": "East One", "territory": "east"})
	waitRecord(t, a, "contacts", "e2", map[string]any{"last_name": "East Two", "territory": "east"})
	waitRecord(t, a, "accounts", "acme", map[string]any{"name": "Acme"})
	if r := mustFerry(t, a, "sync", "--wait", "--timeout", "20s"); !strings.Contains(r.Stdout, "in sync") {
		t.Fatalf("sync --wait on the laptop:\n%s", r)
	}
	for _, id := range []string{"w1", "w2"} {
		mustFail(t, a, 1, []string{"not found"}, "get", "contacts", id)
	}
	if ids, r := listIDs(t, a, "contacts"); !slices.Equal(ids, []string{"e1", "e2"}) {
		t.Errorf("laptop-a lists contacts %v, want [e1 e2]:\n%s", ids, r)
	}
	if ids, r := listIDs(t, c.officeDir, "contacts"); !slices.Equal(ids, []string{"e1", "e2", "w1", "w2"}) {
		t.Errorf("the office lists contacts %v, want all four:\n%s", ids, r)
	}

	// ferry channels on the laptop: east held and granted, nothing else.
	cs := waitHolds(t, a, "east")
	if !slices.Equal(cs.Granted, []string{"east"}) || cs.Subscribed != nil {
		t.Errorf("laptop-a channels: granted %v subscribed %v, want granted [east], no subscription", cs.Granted, cs.Subscribed)
	}
	for _, k := range []string{"east", "west"} {
		if !slices.Contains(cs.Known, k) {
			t.Errorf("laptop-a does not know channel %s: known %v", k, cs.Known)
		}
	}
	east, _ := heldChannel(cs, "east")
	if east.Keys == 0 || east.Bytes == 0 || east.Unacked == nil || east.Unacked.Count != 0 || len(east.Peers) != 0 {
		t.Errorf("laptop-a east: %+v (want keys, bytes, unacked 0, no peers: a laptop's view)", east)
	}
	// The counts come from each channel store's digest, which `sync --wait`
	// above built on both sides for east.
	checkRecords(t, "laptop-a", east, 2)
	r = mustFerry(t, a, "channels")
	for _, s := range []string{"CHANNEL", "east", "held", "granted: east"} {
		if !strings.Contains(r.Stdout, s) {
			t.Errorf("channels (text) on laptop-a does not say %q:\n%s", s, r)
		}
	}
	for _, line := range strings.Split(r.Stdout, "\n") {
		if strings.HasPrefix(line, "west ") {
			t.Errorf("channels (text) on laptop-a shows west held:\n%s", r)
		}
	}

	// ferry channels on the office: every channel, east granted to laptop-a.
	cs, r = channels(t, c.officeDir)
	if !slices.Equal(cs.Granted, []string{"*"}) {
		t.Errorf("office granted %v, want [*]:\n%s", cs.Granted, r)
	}
	oEast, okE := heldChannel(cs, "east")
	oWest, okW := heldChannel(cs, "west")
	if !okE || !okW {
		t.Fatalf("the office does not hold east and west:\n%s", r)
	}
	if !slices.Equal(oEast.Peers, []string{"laptop-a"}) || len(oWest.Peers) != 0 {
		t.Errorf("office: east granted to %v (want [laptop-a]), west to %v (want nobody)", oEast.Peers, oWest.Peers)
	}
	if oEast.Unacked != nil || oEast.State != "held" || oWest.State != "held" || oWest.Keys == 0 {
		t.Errorf("office east %+v, west %+v", oEast, oWest)
	}
	checkRecords(t, "office", oEast, 2)
	checkRecords(t, "office", oWest, 2)
	if r := mustFerry(t, c.officeDir, "channels"); !strings.Contains(r.Stdout, "laptop-a") || !strings.Contains(r.Stdout, "granted: every channel (office)") {
		t.Errorf("channels (text) on the office:\n%s", r)
	}

	// members --json shows the grants; status the channels held.
	ms := members(t, c.officeDir)
	if m, ok := memberNamed(ms, "laptop-a"); !ok || !slices.Equal(m.Grants, []string{"east"}) {
		t.Errorf("office members: laptop-a %+v, want grants [east]", m)
	}
	if m, ok := memberNamed(ms, "office"); !ok || !slices.Equal(m.Grants, []string{"*"}) {
		t.Errorf("office members: office %+v, want grants [*]", m)
	}
	waitGrants(t, a, "laptop-a", "east")
	st := waitStatusChannels(t, a, []string{"east"}, nil)
	if st.UnackedByChannel["east"].Count != 0 {
		t.Errorf("laptop-a status: unacked by channel %+v", st.UnackedByChannel)
	}
	if r := mustFerry(t, a, "status"); !strings.Contains(r.Stdout, "channels:") || !strings.Contains(r.Stdout, "east") {
		t.Errorf("status (text) on laptop-a lists no channel:\n%s", r)
	}
	if st := mustStatus(t, c.officeDir); !slices.Contains(st.Channels, "east") || !slices.Contains(st.Channels, "west") {
		t.Errorf("office status channels %v, want east and west", st.Channels)
	}

	// A later east record: the counts follow.
	mustFerry(t, c.officeDir, "put", "contacts", "e3", "last_name=East Three", "territory=east")
	waitRecord(t, a, "contacts", "e3", map[string]any{"last_name": "East Three"})
	deadline := time.Now().Add(3 * time.Second)
	for _, dir := range []string{a, c.officeDir} {
		var last apijson.Channel
		counted := func() bool {
			cs, _ := channels(t, dir)
			last, _ = heldChannel(cs, "east")
			return last.Records != nil && *last.Records == 3
		}
		for !counted() && time.Now().Before(deadline) {
			time.Sleep(pollEvery)
		}
		if last.Records == nil || *last.Records != 3 {
			// crdt/digest.go RecordCount reads the digest as last built,
			// without applying the records marked dirty since.
			t.Errorf("%s: east shows %s records after a third east record, want 3", filepath.Base(dir), countOf(last))
		}
	}

	// Still never west, after all of this.
	for _, id := range []string{"w1", "w2"} {
		mustFail(t, a, 1, []string{"not found"}, "get", "contacts", id)
	}
	c.laptops["laptop-a"].stop()
	c.office.stop()
}

func countOf(ch apijson.Channel) string {
	if ch.Records == nil {
		return "no count of"
	}
	return fmt.Sprint(*ch.Records)
}

// checkRecords checks a channel's record count in `ferry channels --json`.
func checkRecords(t *testing.T, node string, ch apijson.Channel, want int) {
	t.Helper()
	switch {
	case ch.Records == nil:
		// node/channels_api.go reads crdt.Store.RecordCount, which only
		// answers once something (a peer's digest request, sync --wait,
		// diff) built the channel's digest, and never refreshes it.
		t.Errorf("%s: ferry channels shows no record count for %s (%+v), want %d", node, ch.Name, ch, want)
	case *ch.Records != want:
		t.Errorf("%s: channel %s shows %d records, want %d", node, ch.Name, *ch.Records, want)
	}
}

// TestChannelCommandsRefuseBadInput: grant, ungrant, subscribe and a put
// outside the channels held exit non-zero with a clear message and change
// nothing.
func TestChannelCommandsRefuseBadInput(t *testing.T) {
	e2e(t)
	c := startChanCluster(t, "laptop-a")
	a := c.dirs["laptop-a"]
	mustFerry(t, c.officeDir, "grant", "laptop-a", "east")
	mustFerry(t, c.officeDir, "put", "contacts", "e1", "last_name=East One", "territory=east")
	mustFerry(t, c.officeDir, "put", "contacts", "w1", "last_name=West One", "territory=west")
	waitRecord(t, a, "contacts", "e1", map[string]any{"last_name": "East One"})
	waitHolds(t, a, "east")
	known := func(dir string) []string { cs, _ := channels(t, dir); return cs.Known }
	knownBefore := known(c.officeDir)

	// Only an office grants.
	mustFail(t, a, 1, []string{"only an office grants"}, "grant", "laptop-a", "west")
	mustFail(t, a, 1, []string{"only an office grants"}, "ungrant", "laptop-a", "east")
	mustFail(t, a, 1, []string{"only an office grants"}, "grant", "laptop-a", "north")
	// A bad channel name names the rule.
	for _, dir := range []string{c.officeDir, a} {
		mustFail(t, dir, 1, []string{`bad channel name "West Coast"`, "lowercase letter or digit"}, "grant", "laptop-a", "West Coast")
	}
	mustFail(t, c.officeDir, 1, []string{`bad channel name "West"`}, "grant", "laptop-a", "east", "West")
	// An unknown member.
	mustFail(t, c.officeDir, 1, []string{`member "nobody"`, "not found"}, "grant", "nobody", "west")
	mustFail(t, c.officeDir, 1, []string{`member "nobody"`, "not found"}, "ungrant", "nobody", "east")
	// An office holds every channel: it is never granted one, nor subscribes.
	mustFail(t, c.officeDir, 1, []string{"office holds every channel"}, "grant", "office", "north")
	mustFail(t, c.officeDir, 1, []string{"office holds every channel", "for laptops"}, "subscribe", "east")
	mustFail(t, c.officeDir, 1, []string{"office holds every channel", "for laptops"}, "unsubscribe", "east")
	// Usage errors.
	mustFail(t, c.officeDir, 2, []string{"MEMBER CHANNEL..."}, "grant", "laptop-a")
	mustFail(t, a, 2, []string{"CHANNEL..."}, "subscribe")
	mustFail(t, a, 1, []string{`bad channel name "East"`}, "subscribe", "East")

	// A put into a channel the laptop does not hold, or to a bad one.
	mustFail(t, a, 1, []string{"contacts/w9", "channel west", "not held"}, "put", "contacts", "w9", "last_name=W9", "territory=west")
	mustFail(t, a, 1, []string{"contacts/w9", "territory", `bad channel name "West Coast"`}, "put", "contacts", "w9", "last_name=W9", "territory=West Coast")

	// Nothing changed: grants, channels, records; and the laptop still
	// writes into east.
	if cs, r := channels(t, a); !slices.Equal(heldNames(cs), []string{"east"}) || !slices.Equal(cs.Granted, []string{"east"}) || cs.Subscribed != nil {
		t.Errorf("laptop-a channels changed:\n%s", r)
	}
	if k := known(c.officeDir); !slices.Equal(k, knownBefore) {
		t.Errorf("known channels on the office: %v, before the refused commands %v", k, knownBefore)
	}
	for _, dir := range []string{c.officeDir, a} {
		for _, name := range []string{"laptop-a", "office"} {
			want := []string{"east"}
			if name == "office" {
				want = []string{"*"}
			}
			if m, _ := memberNamed(members(t, dir), name); !slices.Equal(m.Grants, want) {
				t.Errorf("%s: member %s grants %v, want %v", filepath.Base(dir), name, m.Grants, want)
			}
		}
	}
	for _, dir := range []string{c.officeDir, a} {
		if s, err := datadir.ReadSettings(dir); err != nil || s.Channels != nil {
			t.Errorf("%s: config.yaml got channels %v (%v)", filepath.Base(dir), s.Channels, err)
		}
	}
	mustFerry(t, a, "put", "contacts", "e2", "last_name=East Two", "territory=east")
	waitRecord(t, c.officeDir, "contacts", "e2", map[string]any{"last_name": "East Two"})
	if r := mustFerry(t, a, "sync", "--wait", "--timeout", "20s"); !strings.Contains(r.Stdout, "in sync") {
		t.Fatalf("sync --wait on the laptop:\n%s", r)
	}
	mustFail(t, c.officeDir, 1, []string{"not found"}, "get", "contacts", "w9")
	if ids, r := listIDs(t, a, "contacts"); !slices.Equal(ids, []string{"e1", "e2"}) {
		t.Errorf("laptop-a lists contacts %v, want [e1 e2]:\n%s", ids, r)
	}
	c.laptops["laptop-a"].stop()
	c.office.stop()
}

// TestChannelUngrantHandsOverOfflineEdit: a laptop offline with edits of
// east no office has (restarted meanwhile), east ungranted meanwhile: back
// online, the office gets the edits, and the laptop purges east.
func TestChannelUngrantHandsOverOfflineEdit(t *testing.T) {
	e2e(t)
	c := startChanCluster(t, "laptop-a")
	a := c.dirs["laptop-a"]
	mustFerry(t, c.officeDir, "grant", "laptop-a", "east")
	for i := 1; i <= 3; i++ {
		mustFerry(t, c.officeDir, "put", "contacts", fmt.Sprintf("e%d", i), fmt.Sprintf("last_name=East %d", i), "territory=east")
	}
	mustFerry(t, c.officeDir, "put", "contacts", "w1", "last_name=West One", "territory=west")
	waitRecord(t, a, "contacts", "e3", map[string]any{"last_name": "East 3"})
	if r := mustFerry(t, a, "sync", "--wait", "--timeout", "20s"); !strings.Contains(r.Stdout, "in sync") {
		t.Fatalf("sync --wait on the laptop:\n%s", r)
	}

	// With no node running, the CLI opens the store itself: it should
	// show the channels held.
	c.laptops["laptop-a"].stop()
	if r := ferry(t, a, "get", "contacts", "e1"); r.Code != 0 {
		// node/channels.go openChannelLocked: without a network (serve is
		// false) a channel is opened but never added to the router nor to
		// the channels held, so a CLI command run with the node stopped
		// reads and writes no channel.
		t.Errorf("with the node stopped, laptop-a does not show its east record:\n%s", r)
	}
	c.laptops["laptop-a"] = startNode(t, a)
	waitHolds(t, a, "east")

	// Offline, the laptop edits an east record and creates one; meanwhile
	// the office ends the grant.
	mustFerry(t, a, "offline")
	eventually(t, "laptop-a is offline with no connection", func() (bool, string) {
		st, r := status(t, a)
		return r.Code == 0 && st.Running && !st.Online && st.ConnectedPeers == 0, r.String()
	})
	mustFerry(t, a, "put", "contacts", "e1", "phone=555-0101")
	mustFerry(t, a, "put", "contacts", "e9", "last_name=Made offline", "territory=east")
	if st := mustStatus(t, a); st.UnackedByChannel["east"].Count == 0 {
		t.Errorf("offline laptop-a: unacked by channel %+v, want east's edits counted", st.UnackedByChannel)
	}
	r := mustFerry(t, c.officeDir, "ungrant", "laptop-a", "east")
	if !strings.HasSuffix(r.Stdout, " is granted: none\n") {
		t.Errorf("ungrant printed %q", r.Stdout)
	}
	if m, _ := memberNamed(members(t, c.officeDir), "laptop-a"); len(m.Grants) != 0 {
		t.Errorf("office members: laptop-a still granted %v", m.Grants)
	}
	mustFail(t, c.officeDir, 1, []string{"not found"}, "get", "contacts", "e9")
	// Restarted, still offline (kept across restarts): nothing is lost.
	c.laptops["laptop-a"].stop()
	c.laptops["laptop-a"] = startNode(t, a)
	if st := waitStatusChannels(t, a, []string{"east"}, nil); st.Online || st.ConnectedPeers != 0 {
		t.Errorf("laptop-a restarted: online %t, %d peers connected, want offline", st.Online, st.ConnectedPeers)
	}
	waitRecord(t, a, "contacts", "e9", map[string]any{"last_name": "Made offline"})
	waitRecord(t, a, "contacts", "e1", map[string]any{"phone": "555-0101"})
	if found := filesHolding(t, filepath.Join(a, "store"), "Made offline"); len(found) == 0 {
		t.Fatal("no file of laptop-a's store holds its offline record: the check after the purge would prove nothing")
	}

	// Back online: the edits reach the office, then east goes from the
	// laptop.
	mustFerry(t, a, "online")
	waitRecord(t, c.officeDir, "contacts", "e1", map[string]any{"phone": "555-0101", "last_name": "East 1"})
	waitRecord(t, c.officeDir, "contacts", "e9", map[string]any{"last_name": "Made offline", "territory": "east"})
	cs := waitHolds(t, a)
	if len(cs.Granted) != 0 || !slices.Contains(cs.Known, "east") {
		t.Errorf("laptop-a channels after the ungrant: granted %v known %v", cs.Granted, cs.Known)
	}
	eventually(t, "laptop-a lists no contact", func() (bool, string) {
		ids, r := listIDs(t, a, "contacts")
		return len(ids) == 0, r.String()
	})
	for _, id := range []string{"e1", "e9"} {
		mustFail(t, a, 1, []string{"not found"}, "get", "contacts", id)
	}
	waitStatusChannels(t, a, nil, nil)
	if r := mustFerry(t, a, "status"); strings.Contains(r.Stdout, "east") {
		t.Errorf("status (text) on laptop-a still names east:\n%s", r)
	}
	waitGrants(t, a, "laptop-a")
	if r := mustFerry(t, a, "channels"); !strings.Contains(r.Stdout, "(no channel held)") {
		t.Errorf("channels (text) on laptop-a:\n%s", r)
	} else if !strings.Contains(r.Stdout, "granted: none") {
		// cmd/ferry/cmd_channels.go prints "every channel (open network)"
		// when Granted is nil, and apijson.Channels.Granted is omitempty:
		// a secured laptop granted nothing reads as granted everything.
		t.Errorf("channels (text) on a secured laptop granted nothing does not say \"granted: none\":\n%s", r.Stdout)
	}

	// The purge erased east from the laptop's disk: no file of its store
	// holds a value of it, once GC ran (the purge rotates badger's value
	// log first, so that GC may delete the file that held them).
	eventually(t, "no file of laptop-a's store holds an east value", func() (bool, string) {
		found := filesHolding(t, filepath.Join(a, "store"), "Made offline")
		return len(found) == 0, fmt.Sprint(found)
	})

	// The purge was no delete: the office keeps every record, and the
	// laptop's later edits never reach east.
	for i := 1; i <= 3; i++ {
		waitRecord(t, c.officeDir, "contacts", fmt.Sprintf("e%d", i), map[string]any{"last_name": fmt.Sprintf("East %d", i)})
	}
	mustFail(t, a, 1, []string{"channel east", "not held"}, "put", "contacts", "e1", "phone=555-late", "territory=east")
	if cs, r := channels(t, c.officeDir); func() bool { e, ok := heldChannel(cs, "east"); return !ok || len(e.Peers) != 0 }() {
		t.Errorf("office channels after the ungrant:\n%s", r)
	}
	c.laptops["laptop-a"].stop()
	c.office.stop()
}

// TestChannelUnsubscribeNarrows: a laptop granted east and west stops
// taking east offline, keeps that choice across a restart, and takes it
// again with subscribe.
func TestChannelUnsubscribeNarrows(t *testing.T) {
	e2e(t)
	c := startChanCluster(t, "laptop-b")
	b := c.dirs["laptop-b"]
	mustFerry(t, c.officeDir, "grant", "laptop-b", "east", "west")
	mustFerry(t, c.officeDir, "put", "contacts", "e1", "last_name=East One", "territory=east")
	mustFerry(t, c.officeDir, "put", "contacts", "w1", "last_name=West One", "territory=west")
	waitRecord(t, b, "contacts", "e1", map[string]any{"last_name": "East One"})
	waitRecord(t, b, "contacts", "w1", map[string]any{"last_name": "West One"})
	waitStatusChannels(t, b, []string{"east", "west"}, nil)

	r := mustFerry(t, b, "unsubscribe", "east")
	if r.Stdout != "taking offline: west\n" {
		t.Errorf("unsubscribe printed %q", r.Stdout)
	}
	narrowed := func(west ...string) {
		t.Helper()
		waitStatusChannels(t, b, []string{"west"}, []string{"east"})
		if r := mustFerry(t, b, "status"); !strings.Contains(r.Stdout, "granted, not taken offline: east") {
			t.Errorf("status (text) does not say east is not taken offline:\n%s", r)
		}
		cs := waitHolds(t, b, "west")
		if !slices.Equal(cs.Subscribed, []string{"west"}) || !slices.Equal(cs.Granted, []string{"east", "west"}) {
			t.Errorf("laptop-b channels: subscribed %v granted %v", cs.Subscribed, cs.Granted)
		}
		if ids, r := listIDs(t, b, "contacts"); !slices.Equal(ids, west) {
			t.Errorf("laptop-b lists %v, want %v:\n%s", ids, west, r)
		}
		mustFail(t, b, 1, []string{"not found"}, "get", "contacts", "e1")
		if s, err := datadir.ReadSettings(b); err != nil || !slices.Equal(derefChannels(s.Channels), []string{"west"}) {
			t.Errorf("config.yaml channels %v (%v), want [west]", s.Channels, err)
		}
	}
	narrowed("w1")
	// The grants are untouched: the office still lists both.
	if m, _ := memberNamed(members(t, c.officeDir), "laptop-b"); !slices.Equal(m.Grants, []string{"east", "west"}) {
		t.Errorf("office members: laptop-b grants %v", m.Grants)
	}
	mustFail(t, b, 1, []string{"channel east", "not held"}, "put", "contacts", "e2", "last_name=E2", "territory=east")
	mustFerry(t, c.officeDir, "put", "contacts", "e2", "last_name=East Two", "territory=east")
	mustFerry(t, c.officeDir, "put", "contacts", "w2", "last_name=West Two", "territory=west")
	waitRecord(t, b, "contacts", "w2", map[string]any{"last_name": "West Two"})
	mustFail(t, b, 1, []string{"not found"}, "get", "contacts", "e2")

	// The choice is kept across a restart.
	c.laptops["laptop-b"].stop()
	c.laptops["laptop-b"] = startNode(t, b)
	narrowed("w1", "w2")

	// Subscribed again, east comes back (fetched afresh), and stays
	// across a restart.
	if r := mustFerry(t, b, "subscribe", "east"); r.Stdout != "taking offline: east, west\n" {
		t.Errorf("subscribe printed %q", r.Stdout)
	}
	waitRecord(t, b, "contacts", "e1", map[string]any{"last_name": "East One"})
	waitRecord(t, b, "contacts", "e2", map[string]any{"last_name": "East Two"})
	waitStatusChannels(t, b, []string{"east", "west"}, nil)
	c.laptops["laptop-b"].stop()
	if s, err := datadir.ReadSettings(b); err != nil || !slices.Equal(derefChannels(s.Channels), []string{"east", "west"}) {
		t.Errorf("config.yaml channels %v (%v), want [east west]", s.Channels, err)
	}
	c.laptops["laptop-b"] = startNode(t, b)
	waitStatusChannels(t, b, []string{"east", "west"}, nil)
	if ids, r := listIDs(t, b, "contacts"); !slices.Equal(ids, []string{"e1", "e2", "w1", "w2"}) {
		t.Errorf("laptop-b lists %v, want all four:\n%s", ids, r)
	}
	mustFerry(t, b, "put", "contacts", "e1", "phone=555-0102")
	waitRecord(t, c.officeDir, "contacts", "e1", map[string]any{"phone": "555-0102"})
	c.laptops["laptop-b"].stop()
	c.office.stop()
}

// TestChannelUnsubscribeAllKeptAcrossRestart: unsubscribing from every
// channel granted is kept in config.yaml (an empty channels: list) across
// a restart; the laptop does not take every channel granted again.
func TestChannelUnsubscribeAllKeptAcrossRestart(t *testing.T) {
	e2e(t)
	c := startChanCluster(t, "laptop-b")
	b := c.dirs["laptop-b"]
	mustFerry(t, c.officeDir, "grant", "laptop-b", "east")
	mustFerry(t, c.officeDir, "put", "contacts", "e1", "last_name=East One", "territory=east")
	waitRecord(t, b, "contacts", "e1", map[string]any{"last_name": "East One"})
	if r := mustFerry(t, b, "unsubscribe", "east"); r.Stdout != "taking offline: none\n" {
		t.Errorf("unsubscribe printed %q", r.Stdout)
	}
	waitStatusChannels(t, b, nil, []string{"east"})
	if cs, r := channels(t, b); cs.Subscribed == nil {
		t.Errorf("channels --json has no subscription (reads as every channel granted):\n%s", r)
	}
	c.laptops["laptop-b"].stop()
	if s, err := datadir.ReadSettings(b); err != nil || s.Channels == nil {
		t.Errorf("config.yaml lost the empty subscription: channels %#v (%v)", s.Channels, err)
	}
	c.laptops["laptop-b"] = startNode(t, b)
	waitStatusChannels(t, b, nil, []string{"east"})
}

// derefChannels is config.yaml's channels list (nil when absent).
func derefChannels(l *[]string) []string {
	if l == nil {
		return nil
	}
	return *l
}

// filesHolding returns the files under dir whose bytes contain s.
func filesHolding(t *testing.T, dir, s string) []string {
	t.Helper()
	found, err := ondisk.FilesHolding(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	return found
}
