package main

// Channels (issue 14, docs/channels.md): contacts are routed by territory
// into channels east and west. The office holds both; at setup it grants
// each laptop a non-empty subset drawn from the seed, and waits until
// every laptop holds exactly its grants. The harness keeps a model: each
// laptop's grants (and their timeline), each record's channel (its
// territory as last written by an acknowledged write) and whether its
// last acknowledged write was a delete. Every write of a contact is routed
// by that model: a put or an import line always carries territory=<the
// record's channel> (so that a record created or re-created goes to its
// channel), and a write drawn for a laptop on a record of a channel it is
// not granted goes to a record it is granted instead (a hot record of its
// channels; for an import line, a fresh record). A laptop granted nothing
// keeps the drawn record: its write is refused ("not held"), like any
// write on a laptop that has not heard of its grant yet (counted, neither
// acknowledged nor failed).
//
// Channel steps are drawn at chanShare % of the steps from a random
// stream of their own (after the compaction stream, before the usual
// draw), one of:
//
//   - grant or ungrant (40%): the office grants a laptop a channel it
//     lacks, or ends one of its grants; half of the ungrants first take
//     the laptop offline and make 1 or 2 edits there (edits no office
//     holds, which the laptop must hand over), and bring it back online
//     afterwards more often than not;
//   - move (35%): a node edits the routing field of a record it holds
//     (territory to the other channel); the office then moves the record
//     with its history (node/moves.go: on the change itself, and at every
//     start);
//   - a write into a channel not granted (25%): a laptop puts a fresh
//     record (or imports 5-20) with territory=<a channel it neither is
//     granted nor holds, as its `ferry channels --json` says>; it must be
//     refused (exit non-zero, "not held" or "not granted"), and its unique
//     value must show nowhere at the end (checked like a write refused on
//     a full disk).
//
// The steps are in channels_steps.go, the checks in channels_check.go
// and channels_disk.go.

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
)

const (
	// chanSalt picks the random stream of the channel steps.
	chanSalt = 0xc4a2_0e15_0000_0014
	// chanShare: percentage of the steps that are a channel step.
	chanShare = 12
	// routingField routes contacts: its value is the record's channel.
	routingField = "territory"
	// defaultChannel is where a contact without a territory goes.
	defaultChannel = "unassigned"
	// holdWithin bounds the wait for the laptops to hold their first
	// grants at setup.
	holdWithin = 30 * time.Second
)

// channelNames are the channels of the schedules.
var channelNames = []string{"east", "west"}

// grantEvent is a grant or an ungrant the office acknowledged.
type grantEvent struct {
	step    int
	laptop  *node
	channel string
	granted bool
	// at: when the command started (its time is no earlier).
	at time.Time
}

// chanState is the harness's model of the channels.
type chanState struct {
	// grants: each laptop's channels now; ever: every channel it was
	// granted in the schedule.
	grants map[*node]map[string]bool
	ever   map[*node]map[string]bool
	events []grantEvent
	// home: each record's channel (the territory its last acknowledged
	// write gave it); deleted: its last acknowledged write was a delete
	// (absent: no acknowledged write).
	home    map[string]string
	deleted map[string]bool
	renames int
	// moved: the moves of each record (acknowledged routing edits).
	moved map[string][]string
	// awayAt: the steps of the compactions each laptop was away for
	// (offline or down), for the diagnosis of a hand-over that never ends.
	awayAt map[*node][]int
	// final: each acknowledged write's record's channel at the end;
	// exempt: the acknowledged writes not checked, and why (the checks
	// fill both).
	final  map[string]string
	exempt map[*ackedWrite]string
	// pendingCuts: ops some history lost to a compaction of their
	// channel, checked against the channels' cuts once the nodes are
	// stopped (cutSeen dedupes them; both reset by each verify pass).
	pendingCuts []pendingCut
	cutSeen     map[string]bool
	// lastConv: the last channel convergence report logged.
	lastConv string
}

// chanStats are the channel counters of a schedule.
type chanStats struct {
	// steps: channel steps; grants, ungrants: acknowledged by the office
	// (setup's included); handOver: ungrants made after the laptop
	// edited the channel offline; moves: acknowledged edits of the
	// routing field; movesSkipped: the writer did not show the record in
	// its channel; notGranted: writes into a channel not granted, refused.
	steps, grants, ungrants, handOver, moves, movesSkipped, notGranted int
	// notHeld: ordinary writes refused because the laptop did not hold
	// the record's channel (its grant not heard yet, or none).
	notHeld int
	// afterUngrant: acknowledged writes of a laptop into a channel after
	// the office ended its grant (it had not heard): not checked;
	// clockIgnored: writes made while granted that the office ignores as
	// written after the ungrant by the clocks (a laptop's clock ahead).
	afterUngrant, clockIgnored int
	// compared: (channel, node) pairs found converged; purged:
	// (laptop, channel) pairs checked empty on disk at the end; refusedAbsent:
	// values of not-granted writes checked absent on every node.
	compared, purged, refusedAbsent int
}

func (s *chanStats) add(o chanStats) {
	s.steps += o.steps
	s.grants += o.grants
	s.ungrants += o.ungrants
	s.handOver += o.handOver
	s.moves += o.moves
	s.movesSkipped += o.movesSkipped
	s.notGranted += o.notGranted
	s.notHeld += o.notHeld
	s.afterUngrant += o.afterUngrant
	s.clockIgnored += o.clockIgnored
	s.compared += o.compared
	s.purged += o.purged
	s.refusedAbsent += o.refusedAbsent
}

// line is the channel part of a schedule's line.
func (s chanStats) line() string {
	return fmt.Sprintf("grants=%d ungrants=%d moves=%d notgranted=%d", s.grants, s.ungrants, s.moves, s.notGranted)
}

// summary is the channel part of the totals.
func (s chanStats) summary() string {
	return fmt.Sprintf("channels: %d channel steps, %d grants, %d ungrants (%d after offline edits to hand over), %d moves (%d skipped: the writer did not show the record), %d not-granted refusals (%d values checked absent), %d writes refused as not held, %d acknowledged writes made after an ungrant (not checked), %d ignored as written after the ungrant by the clocks, %d channel×node pairs converged, %d ungranted channel×laptop pairs checked empty on disk",
		s.steps, s.grants, s.ungrants, s.handOver, s.moves, s.movesSkipped, s.notGranted, s.refusedAbsent, s.notHeld, s.afterUngrant, s.clockIgnored, s.compared, s.purged)
}

// holds: n is the office, or granted ch in the model.
func (c *cluster) holds(n *node, ch string) bool {
	return n.office || c.ch.grants[n][ch]
}

// grantedTo lists n's channels in the model (every channel for the
// office), sorted.
func (c *cluster) grantedTo(n *node) []string {
	if n.office {
		return slices.Clone(channelNames)
	}
	var out []string
	for ch, ok := range c.ch.grants[n] {
		if ok {
			out = append(out, ch)
		}
	}
	sort.Strings(out)
	return out
}

// homeOf is a record's channel in the model ("" when unknown).
func (c *cluster) homeOf(id string) string { return c.ch.home[id] }

// chanOf is the channel a record's fields route it to.
func chanOf(fields map[string]any) string {
	if s, ok := fields[routingField].(string); ok && s != "" {
		return s
	}
	return defaultChannel
}

// hash32 is a stable hash, to pick without a random stream.
func hash32(s string) int {
	h := fnv.New32a()
	h.Write([]byte(s))
	return int(h.Sum32() & 0x7fffffff)
}

// setupChannels draws each hot record's channel and each laptop's grants
// (a non-empty subset), grants them on the office and waits until every
// laptop holds exactly its grants.
func (c *cluster) setupChannels(ctx context.Context) error {
	r := stepRand(c.seed^chanSalt, 0)
	c.ch.grants = map[*node]map[string]bool{}
	c.ch.ever = map[*node]map[string]bool{}
	c.ch.home = map[string]string{}
	c.ch.deleted = map[string]bool{}
	c.ch.moved = map[string][]string{}
	c.ch.awayAt = map[*node][]int{}
	for k := range 10 {
		c.ch.home[fmt.Sprintf("c%02d", k)] = channelNames[r.IntN(len(channelNames))]
	}
	c.logf("channels: hot records %v", c.ch.home)
	office := c.nodes[0]
	for _, n := range c.nodes[1:] {
		c.ch.grants[n] = map[string]bool{}
		c.ch.ever[n] = map[string]bool{}
		mask := 1 + r.IntN(1<<len(channelNames)-1)
		var chs []string
		for i, ch := range channelNames {
			if mask&(1<<i) != 0 {
				chs = append(chs, ch)
			}
		}
		at := time.Now()
		res := c.ferry(ctx, office, append([]string{"grant", n.name}, chs...)...)
		if !res.ok() {
			return fmt.Errorf("grant %s %v: %s", n.name, chs, res.brief())
		}
		for _, ch := range chs {
			c.ch.grants[n][ch], c.ch.ever[n][ch] = true, true
			c.ch.events = append(c.ch.events, grantEvent{step: 0, laptop: n, channel: ch, granted: true, at: at})
			c.stats.ch.grants++
		}
	}
	for _, n := range c.nodes[1:] {
		want := c.grantedTo(n)
		err := poll(ctx, holdWithin, func() (bool, string) {
			cs, res, err := c.channels(ctx, n)
			if err != nil {
				return false, err.Error()
			}
			held, leaving := heldStates(cs)
			return slices.Equal(held, want) && len(leaving) == 0, res.stdout
		})
		if err != nil {
			return fmt.Errorf("%s never held its channels %v: %w", n.name, want, err)
		}
	}
	return nil
}

// channels runs `ferry channels --json` on n.
func (c *cluster) channels(ctx context.Context, n *node) (apijson.Channels, result, error) {
	res := c.ferry(ctx, n, "channels", "--json")
	var cs apijson.Channels
	if !res.ok() {
		return cs, res, fmt.Errorf("channels on %s: %s", n.name, res.brief())
	}
	if err := json.Unmarshal([]byte(res.stdout), &cs); err != nil {
		return cs, res, fmt.Errorf("channels --json on %s: %w", n.name, err)
	}
	return cs, res, nil
}

// heldStates splits the channels of `ferry channels --json` into those
// held and those being left, each sorted.
func heldStates(cs apijson.Channels) (held, leaving []string) {
	for _, ch := range cs.Held {
		if ch.State == "held" {
			held = append(held, ch.Name)
		} else {
			leaving = append(leaving, ch.Name)
		}
	}
	sort.Strings(held)
	sort.Strings(leaving)
	return held, leaving
}

// routeID returns the record n writes in place of id: id itself when n
// holds its channel (or nothing better exists), else a hot record of one
// of n's channels (picked by a hash of id).
func (c *cluster) routeID(n *node, id string) string {
	if h := c.homeOf(id); h == "" || c.holds(n, h) {
		return id
	}
	var cands []string
	for k := range 10 {
		hid := fmt.Sprintf("c%02d", k)
		if c.holds(n, c.homeOf(hid)) {
			cands = append(cands, hid)
		}
	}
	if len(cands) == 0 {
		return id
	}
	return cands[hash32(id)%len(cands)]
}

// routePut routes a put drawn by putArgs for n: the record (routeID), and
// territory=<its channel> added to the fields unless the put sets the
// territory itself (a move). values gets the territory too.
func (c *cluster) routePut(n *node, id string, args []string, values map[string]any) (string, []string) {
	nid := c.routeID(n, id)
	out := slices.Clone(args)
	if nid != id {
		c.logf("routing: %s is not granted %s's channel %s: %s instead", n.name, id, c.homeOf(id), nid)
		out[2] = nid
	}
	for _, a := range out {
		if strings.HasPrefix(a, routingField+"=") {
			return nid, out
		}
	}
	h := c.homeOf(nid)
	if h == "" {
		h = channelNames[hash32(nid)%len(channelNames)]
		c.ch.home[nid] = h
	}
	values[routingField] = h
	if len(out) > 0 && out[len(out)-1] == "--json" {
		return nid, append(out[:len(out)-1:len(out)-1], routingField+"="+h, "--json")
	}
	return nid, append(out, routingField+"="+h)
}

// routeImport routes the lines of an import on n (in place): every line
// gets territory=<its record's channel>; a line of a record whose channel
// n is not granted becomes a fresh record; a fresh record goes to one of
// n's channels (picked by a hash of its id; any channel for a laptop
// granted nothing: the import is then refused).
func (c *cluster) routeImport(n *node, lines []map[string]any) {
	mine := c.grantedTo(n)
	if len(mine) == 0 {
		mine = channelNames
	}
	renamed := 0
	for _, l := range lines {
		id := l["id"].(string)
		h := c.homeOf(id)
		if h != "" && !c.holds(n, h) {
			c.ch.renames++
			id = fmt.Sprintf("i%dr%d", c.step, c.ch.renames)
			l["id"] = id
			h = ""
			renamed++
		}
		if h == "" {
			h = mine[hash32(id)%len(mine)]
			c.ch.home[id] = h
		}
		l[routingField] = h
	}
	if renamed > 0 {
		c.logf("routing: %d lines of the import on %s were records of channels it is not granted: fresh records instead", renamed, n.name)
	}
}

// noteAcked completes an acknowledged write's channel bookkeeping: the
// channel it was made in (the model's), whether its laptop was no longer
// granted it (the office ended the grant, the laptop had not heard), and
// the model's deleted flag.
func (c *cluster) noteAcked(w *ackedWrite) {
	w.ch = c.homeOf(w.id)
	if w.ch == "" {
		if v, ok := w.fields[routingField]; ok {
			w.ch, _ = v.(string)
		} else if v, ok := w.same[routingField]; ok {
			w.ch, _ = v.(string)
		}
	}
	if !w.node.office && w.ch != "" && !c.holds(w.node, w.ch) {
		w.afterUngrant = true
		c.stats.ch.afterUngrant++
		c.logf("%s acknowledged a write of %s/%s in channel %s after its grant ended (it had not heard): not checked", w.node.name, collection, w.id, w.ch)
	}
	if _, del := w.fields[recordField]; del {
		c.ch.deleted[w.id] = true
	} else if len(w.fields)+len(w.same) > 0 {
		c.ch.deleted[w.id] = false
	}
}

// movedNote says, for a message about a record, how it was moved (""
// if never): a node holding both channels reads the history of a record
// from one channel's copy.
func (c *cluster) movedNote(id string) string {
	if len(c.ch.moved[id]) == 0 {
		return ""
	}
	return fmt.Sprintf(" (the record was moved: %s; `ferry history` may show the copy of the channel it left)", strings.Join(c.ch.moved[id], ", "))
}

// noteCompactionAway notes, at an acknowledged compaction, the laptops
// away (offline or down).
func (c *cluster) noteCompactionAway() {
	for _, n := range c.nodes[1:] {
		if n.offline || !n.running() {
			c.ch.awayAt[n] = append(c.ch.awayAt[n], c.step)
		}
	}
}

// leavingNote says why a laptop may be stuck leaving a channel, for a
// message: its ungrants of that channel, and the compactions it was away
// for (a laptop away across a compaction of the channel and then
// ungranted never completes its hand-over: docs/chaos.md, "Runs with
// channels").
func (c *cluster) leavingNote(n *node, ch string) string {
	var ungrants []string
	for _, e := range c.ch.events {
		if e.laptop == n && e.channel == ch && !e.granted {
			ungrants = append(ungrants, fmt.Sprint(e.step))
		}
	}
	return fmt.Sprintf("%s leaving %s: ungranted at step(s) %s; compactions started at steps %v, %s away (offline or down) at those of steps %v", n.name, ch, strings.Join(ungrants, ", "), c.comp.started, n.name, c.ch.awayAt[n])
}

// noteRefused counts an ordinary write refused because its laptop does
// not hold the record's channel.
func (c *cluster) noteRefused(n *node, what string, res result) {
	if res.ok() || res.err != nil {
		return
	}
	if msg := res.stderr + res.stdout; strings.Contains(msg, "not held") || strings.Contains(msg, "not granted") {
		c.stats.ch.notHeld++
		c.logf("%s on %s refused: the laptop does not hold the channel (%s)", what, n.name, res.brief())
	}
}
