package main

// The checks of channels (see channels.go for the steps):
//
//   - the convergence waits, besides equal digests of the everyone store,
//     for every laptop to hold exactly the channels the model grants it
//     (none being left: its hand-overs and purges done), for every holder
//     of a channel to show the same record count and be in the same epoch
//     of it as the office, and for the office's GET /v1/sync to find every
//     laptop in sync, on every channel both hold;
//   - check 11: per channel, every node holding it lists the same records
//     and conflicts of it as the office;
//   - check 12: a laptop lists no record of a channel it does not hold,
//     holds only the channels it is granted, and (once the nodes are
//     stopped) has no key left under a channel it is not granted;
//   - check 13: a record shows once on every node (one line of `list`),
//     and the records counts of the channels a node holds add up to the
//     records it lists (a record in two channels counts twice);
//   - check 14: the values of the writes refused as not granted show
//     nowhere (checkFailed, with the writes refused on a full disk);
//   - check 2 per channel: an acknowledged write is checked on the nodes
//     that hold its record's final channel (the territory the office
//     shows, or for a deleted record its newest visible territory), except
//     a laptop's write made after the office ended its grant (it had not
//     heard), and one the office ignores as written after the ungrant by
//     the clocks (a laptop's clock ahead of the office's: documented).

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/apijson"
)

// channelsConverged is the channel part of the convergence (see the top
// of the file); it returns a status line per node (and logs them when
// they change).
func (c *cluster) channelsConverged(ctx context.Context) (bool, []string) {
	ok, lines := c.channelsAgree(ctx)
	if s := strings.Join(lines, "\n    "); s != c.ch.lastConv {
		c.ch.lastConv = s
		c.logf("channels converged=%t:\n    %s", ok, s)
	}
	return ok, lines
}

func (c *cluster) channelsAgree(ctx context.Context) (bool, []string) {
	ok := true
	var lines []string
	per := map[string]map[*node]apijson.Channel{}
	for _, n := range c.nodes {
		cs, _, err := c.channels(ctx, n)
		if err != nil {
			return false, []string{err.Error()}
		}
		held, leaving := heldStates(cs)
		line := fmt.Sprintf("%s: channels held=%v", n.name, held)
		if len(leaving) > 0 {
			ok = false
			line += fmt.Sprintf(" LEAVING=%v", leaving)
			for _, ch := range cs.Held {
				if ch.State != "held" {
					unacked := "?"
					if ch.Unacked != nil {
						unacked = fmt.Sprint(ch.Unacked.Count)
					}
					line += fmt.Sprintf(" (%s: %s edits to hand over, waiting %q; %s)", ch.Name, unacked, ch.Waiting, c.leavingNote(n, ch.Name))
				}
			}
		}
		if want := c.grantedTo(n); !n.office && (!slices.Equal(held, want) || !slices.Equal(sorted(cs.Granted), want)) {
			ok = false
			line += fmt.Sprintf(" granted=%v (the office granted %v)", cs.Granted, want)
		}
		for _, ch := range cs.Held {
			if ch.State != "held" {
				continue
			}
			if per[ch.Name] == nil {
				per[ch.Name] = map[*node]apijson.Channel{}
			}
			per[ch.Name][n] = ch
			records := "…"
			if ch.Records != nil {
				records = fmt.Sprint(*ch.Records)
			} else {
				ok = false
			}
			line += fmt.Sprintf(" %s:records=%s,epoch=%d", ch.Name, records, ch.Epoch)
		}
		lines = append(lines, line)
	}
	office := c.nodes[0]
	for name, holders := range per {
		oc, held := holders[office]
		for n, ch := range holders {
			switch {
			case n.office:
			case !held && ch.Records != nil && *ch.Records == 0:
				// A channel nobody wrote into: the office never opened it.
			case !held:
				ok = false
				lines = append(lines, fmt.Sprintf("%s holds %s, which the office does not", n.name, name))
			case ch.Records == nil || oc.Records == nil || *ch.Records != *oc.Records || ch.Epoch != oc.Epoch:
				ok = false
			}
		}
	}
	if !ok {
		return false, lines
	}
	// The digests of every channel, compared by the office with each
	// laptop over the network.
	sctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	cl, err := api.Dial(office.dir)
	if err != nil {
		return false, append(lines, "GET /v1/sync on the office: "+err.Error())
	}
	st, err := cl.SyncState(sctx)
	if err != nil {
		return false, append(lines, "GET /v1/sync on the office: "+err.Error())
	}
	lines = append(lines, fmt.Sprintf("office sync: digest %s, %d peers", short(st.Digest), len(st.Peers)))
	for _, n := range c.nodes[1:] {
		i := slices.IndexFunc(st.Peers, func(p apijson.PeerSync) bool { return p.Peer == n.peerID })
		switch {
		case i < 0:
			ok = false
			lines = append(lines, fmt.Sprintf("office sync: %s not connected", n.name))
		case !st.Peers[i].InSync:
			ok = false
			lines = append(lines, fmt.Sprintf("office sync: %s not in sync (channels %v, error %q)", n.name, st.Peers[i].Channels, st.Peers[i].Error))
		}
	}
	return ok, lines
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return out
}

// heldSet is the set of channels a view's node holds (state held).
func (v *nodeView) heldSet() map[string]bool {
	out := map[string]bool{}
	for _, ch := range v.chans.Held {
		if ch.State == "held" {
			out[ch.Name] = true
		}
	}
	return out
}

// newestTerritory is the value of the newest visible territory operation
// of a history ("" if none).
func newestTerritory(hist []histEntry) string {
	best := histEntry{}
	for _, e := range hist {
		if e.Field == routingField && e.Visible && (best.Op == "" || newerOp(e.Op, best.Op)) {
			best = e
		}
	}
	s, _ := best.Value.(string)
	return s
}

// finalChannels computes the channel each acknowledged or refused write's
// record ends in: its territory on the office, or for a record the office
// does not list (deleted) the newest visible territory of its history
// there, or the model's.
func (c *cluster) finalChannels(ctx context.Context, office *nodeView) map[string]string {
	out := map[string]string{}
	var ids []string
	for _, w := range c.acked {
		ids = append(ids, w.id)
	}
	for _, id := range ids {
		if _, done := out[id]; done {
			continue
		}
		if rec := office.records[id]; rec != nil {
			out[id] = chanOf(rec.Fields)
			continue
		}
		if hist, err := c.cachedHistory(ctx, office, id); err == nil {
			if t := newestTerritory(hist); t != "" {
				out[id] = t
				continue
			}
		}
		out[id] = c.homeOf(id)
	}
	return out
}

// holdsFinal reports whether v's node must hold write w: it holds the
// final channel of w's record.
func (c *cluster) holdsFinal(v *nodeView, w *ackedWrite) bool {
	if v.n.office {
		return true
	}
	ch := c.ch.final[w.id]
	if ch == "" {
		ch = w.ch
	}
	return v.held[ch]
}

// exemptWrites returns the acknowledged writes not checked, with why: a
// laptop's write made after the office ended its grant of the channel
// (the laptop had not heard), and one the office ignores as not granted
// because its time is after the ungrant's (the laptop's clock ahead of
// the office's; docs/channels.md). A write the office ignores as not
// granted although it was made, by the clocks too, while its laptop was
// granted, is a problem (add).
func (c *cluster) exemptWrites(ctx context.Context, add func(string, ...any)) map[*ackedWrite]string {
	out := map[*ackedWrite]string{}
	office := c.nodes[0]
	var ig []apijson.Ignored
	if cl, err := api.Dial(office.dir); err != nil {
		add("GET /v1/ignored on %s: %v", office.name, err)
	} else if ig, err = cl.Ignored(ctx); err != nil {
		add("GET /v1/ignored on %s: %v", office.name, err)
	}
	byOp := map[string]apijson.Ignored{}
	byRec := map[string][]apijson.Ignored{}
	for _, i := range ig {
		if i.Reason != crdt.ReasonNotGranted || i.Collection != collection {
			continue
		}
		byOp[i.Op] = i
		byRec[i.ID+"/"+i.Writer] = append(byRec[i.ID+"/"+i.Writer], i)
	}
	clock := 0
	for _, w := range c.acked {
		if w.node.office {
			continue
		}
		if w.afterUngrant {
			out[w] = "made after the office ended its grant of " + w.ch
			continue
		}
		var ops []apijson.Ignored
		if i, found := byOp[w.op]; found && w.op != "" {
			ops = []apijson.Ignored{i}
		} else if w.op == "" {
			ops = byRec[w.id+"/"+w.node.peerID]
		}
		if len(ops) == 0 {
			continue
		}
		u := c.ungrantAfter(w)
		t, _, _ := parseOp(ops[0].Op)
		opAt := crdt.Timestamp(t).Wall()
		if b := c.ungrantBefore(w); u == nil && b != nil {
			// The record was still in a channel the laptop had lost
			// without hearing of it (the move to the channel the model
			// says not merged there yet): the write landed there.
			out[w] = fmt.Sprintf("ignored by the office: made in channel %s, which the laptop held the record in, after the office ended that grant at step %d", b.channel, b.step)
			continue
		}
		if u == nil {
			add("acknowledged %s (step %d, on %s, %s/%s%s, channel %s): the office ignores op %s as not granted, but the harness never ended %s's grant of %s after it", w.kind, w.step, w.node.name, collection, w.id, opSuffix(w.op), w.ch, ops[0].Op, w.node.name, w.ch)
			out[w] = "reported"
			continue
		}
		// The ungrant's time is no earlier than the office's clock when
		// the command started.
		bound := u.at.Add(c.nodes[0].skew).Add(-time.Second)
		if opAt.Before(bound) {
			add("acknowledged %s (step %d, on %s, %s/%s%s, channel %s): the office ignores op %s (at %s) as not granted, but it was written before the ungrant of step %d (no earlier than %s)", w.kind, w.step, w.node.name, collection, w.id, opSuffix(w.op), w.ch, ops[0].Op, opAt.Format(time.StampMilli), u.step, bound.Format(time.StampMilli))
			out[w] = "reported"
			continue
		}
		clock++
		out[w] = fmt.Sprintf("ignored by the office: its op %s (at %s) is after the ungrant of step %d by the clocks (%s skew %s, office %s)", ops[0].Op, opAt.Format(time.StampMilli), u.step, w.node.name, w.node.skew, c.nodes[0].skew)
	}
	c.stats.ch.clockIgnored = clock
	return out
}

// ungrantBefore returns the last ungrant of w's laptop, of another channel
// than w's, at or before w's step, nil if none.
func (c *cluster) ungrantBefore(w *ackedWrite) *grantEvent {
	var last *grantEvent
	for i := range c.ch.events {
		e := &c.ch.events[i]
		if e.laptop == w.node && !e.granted && e.channel != w.ch && e.step <= w.step {
			last = e
		}
	}
	return last
}

// ungrantAfter returns the first ungrant of w's laptop and channel after
// w's step, else its first ungrant of another channel after it, nil if
// none.
func (c *cluster) ungrantAfter(w *ackedWrite) *grantEvent {
	var other *grantEvent
	for i := range c.ch.events {
		e := &c.ch.events[i]
		if e.laptop != w.node || e.granted || e.step < w.step {
			continue
		}
		if e.channel == w.ch {
			return e
		}
		if other == nil {
			// A write lands where its node holds the record, which is
			// not always the channel its routing value names (the
			// record not moved yet): an ungrant of that channel counts.
			other = e
		}
	}
	return other
}

// verifyChannels is checks 11 to 13 on the views (see the top of the
// file). It also fills each view's held channels.
func (c *cluster) verifyChannels(ctx context.Context, views []*nodeView, add func(string, ...any)) {
	office := views[0]
	byChan := map[string][]string{}
	idsOf := map[string][]string{}
	for _, id := range sortedIDs(office.records) {
		ch := chanOf(office.records[id].Fields)
		byChan[ch] = append(byChan[ch], office.lines[id])
		idsOf[ch] = append(idsOf[ch], id)
	}
	chanOfID := func(id string) string {
		if rec := office.records[id]; rec != nil {
			return chanOf(rec.Fields)
		}
		if ch := c.ch.final[id]; ch != "" {
			return ch
		}
		return c.homeOf(id)
	}
	compared := 0
	for _, v := range views {
		held := v.heldSet()
		if want := c.grantedTo(v.n); !v.n.office && !slices.Equal(sortedKeysBool(held), want) {
			add("%s holds channels %v, but is granted %v", v.n.name, sortedKeysBool(held), want)
		}
		for id, k := range v.dups {
			add("%s lists %s/%s %d times (a record shows once)", v.n.name, collection, id, k)
		}
		// A channel counts the records its digest covers: those listed,
		// and deleted ones left in a record conflict (not listed).
		counted, hidden := 0, map[string]bool{}
		for _, ch := range v.chans.Held {
			if ch.State == "held" && ch.Records != nil {
				counted += *ch.Records
			}
		}
		for _, cf := range v.conflicts {
			if cf.Field == recordField && v.records[cf.ID] == nil {
				hidden[cf.ID] = true
			}
		}
		switch shown := len(v.records) + len(hidden); {
		case counted > shown:
			add("%s: the channels it holds count %d records, it lists %d (and %d deleted in a record conflict): a record held in two channels (or a wrong count): %s", v.n.name, counted, len(v.records), len(hidden), channelCounts(v.chans))
		case counted < shown:
			add("%s: the channels it holds count %d records, it lists %d (and %d deleted in a record conflict): it shows a record no channel it holds counts (a moved record shown from the channel it left?): %s", v.n.name, counted, len(v.records), len(hidden), channelCounts(v.chans))
		}
		var foreign []string
		mine, mineIDs := map[string][]string{}, map[string][]string{}
		for _, id := range sortedIDs(v.records) {
			ch := chanOf(v.records[id].Fields)
			if !held[ch] {
				foreign = append(foreign, id+"("+ch+")")
				continue
			}
			mine[ch] = append(mine[ch], v.lines[id])
			mineIDs[ch] = append(mineIDs[ch], id)
		}
		if len(foreign) > 0 {
			add("%s lists records of channels it does not hold (holds %v): %s", v.n.name, sortedKeysBool(held), strings.Join(foreign, ", "))
		}
		if v.n.office {
			continue
		}
		for _, ch := range sortedKeysBool(held) {
			a, b := strings.Join(byChan[ch], "\n"), strings.Join(mine[ch], "\n")
			if a != b {
				differ := map[string]bool{}
				for _, id := range append(slices.Clone(idsOf[ch]), mineIDs[ch]...) {
					if office.lines[id] != v.lines[id] || v.records[id] == nil || office.records[id] == nil {
						differ[id] = true
					}
				}
				add("channel %s: list --json differs between %s and %s on %s: %s%s%s", ch, office.n.name, v.n.name, strings.Join(sortedKeysBool(differ), ", "),
					firstDiff(a, b), c.ignoredNote(ctx, office.n, differ), c.ignoredNote(ctx, v.n, differ))
				continue
			}
			compared++
		}
		var oc, vc []string
		for i, cf := range office.conflicts {
			if held[chanOfID(cf.ID)] {
				oc = append(oc, office.confLines[i])
			}
		}
		vc = append(vc, v.confLines...)
		sort.Strings(oc)
		sort.Strings(vc)
		if a, b := strings.Join(oc, "\n"), strings.Join(vc, "\n"); a != b {
			add("conflicts --json of the channels %s holds (%v) differ from the office's: %s", v.n.name, sortedKeysBool(held), firstDiff(a, b))
		}
	}
	c.stats.ch.compared = compared
}

func channelCounts(cs apijson.Channels) string {
	var parts []string
	for _, ch := range cs.Held {
		n := "…"
		if ch.Records != nil {
			n = fmt.Sprint(*ch.Records)
		}
		parts = append(parts, fmt.Sprintf("%s(%s)=%s", ch.Name, ch.State, n))
	}
	return strings.Join(parts, " ")
}

func sortedIDs(m map[string]*recordJSON) []string {
	out := make([]string, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func sortedKeysBool(m map[string]bool) []string {
	out := []string{}
	for k, ok := range m {
		if ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// readChannels adds `ferry channels --json` and the normalised conflict
// lines to a view.
func (c *cluster) readChannels(ctx context.Context, v *nodeView, conflicts string) error {
	cs, _, err := c.channels(ctx, v.n)
	if err != nil {
		return err
	}
	v.chans = cs
	v.held = v.heldSet()
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(conflicts), &raw); err != nil {
		return fmt.Errorf("conflicts --json on %s: %w", v.n.name, err)
	}
	for _, r := range raw {
		s, err := normalise(r)
		if err != nil {
			return err
		}
		v.confLines = append(v.confLines, s)
	}
	return nil
}

// ignoredNote says what n ignores of the records ids (GET /v1/ignored,
// every store), for a message ("" when nothing).
func (c *cluster) ignoredNote(ctx context.Context, n *node, ids map[string]bool) string {
	cl, err := api.Dial(n.dir)
	if err != nil {
		return ""
	}
	ig, err := cl.Ignored(ctx)
	if err != nil {
		return fmt.Sprintf("\n  (GET /v1/ignored on %s: %v)", n.name, err)
	}
	var parts []string
	for _, i := range ig {
		if i.Collection == collection && ids[i.ID] {
			parts = append(parts, fmt.Sprintf("%s %s op %s by %s: %s", i.ID, i.Field, i.Op, c.writerName(i.Writer), i.Reason))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("\n  %s ignores: %s", n.name, strings.Join(parts, "; "))
}

// stuckNote says, for a message about w, that its laptop is still leaving
// w's channel (its edits not handed over yet); "" otherwise.
func stuckNote(views []*nodeView, w *ackedWrite) string {
	for _, v := range views {
		if v.n != w.node {
			continue
		}
		for _, ch := range v.chans.Held {
			if ch.Name == w.ch && ch.State != "held" {
				return fmt.Sprintf(" (%s is still leaving %s: its edits were not handed over)", w.node.name, w.ch)
			}
		}
	}
	return ""
}
