package main

// What the checks of channels read from the stores once every node is
// stopped (see channels_check.go): the keys left of the channels a laptop
// is not granted, and the manifests (cuts) of every epoch of every channel
// on the office.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ipfs/go-datastore/query"
)

// checkPurged is the disk part of check 12, once every node is stopped:
// a laptop has no key left under a channel it is not granted
// (/ferry/ch/<channel>/, /ferry/local/ch/<channel>/), nor a purge marker.
func (c *cluster) checkPurged(ctx context.Context) {
	for _, n := range c.nodes[1:] {
		if n.proc != nil {
			continue // still running: it would not stop (a problem already)
		}
		var not []string
		for _, ch := range channelNames {
			if !c.holds(n, ch) {
				not = append(not, ch)
			}
		}
		if len(not) == 0 {
			continue
		}
		d, err := datadir.OpenStore(n.dir)
		if err != nil {
			c.problem("open the store of %s to look for purged channels: %v", n.name, err)
			continue
		}
		for _, ch := range not {
			var left []string
			for _, prefix := range []string{"/ferry/ch/" + ch + "/", "/ferry/local/ch/" + ch + "/", "/ferry/local/purge/" + ch} {
				k, b, err := datadir.PrefixSize(ctx, d, prefix)
				if err != nil {
					c.problem("%s: size of %s: %v", n.name, prefix, err)
					continue
				}
				if k > 0 {
					left = append(left, fmt.Sprintf("%d keys (%d bytes) under %s", k, b, prefix))
				}
			}
			was := "never granted it"
			if c.ch.ever[n][ch] {
				was = "its grant was ended"
			}
			if len(left) > 0 {
				c.problem("%s is not granted %s (%s), but its store still holds %s", n.name, ch, was, strings.Join(left, ", "))
			} else {
				c.stats.ch.purged++
			}
		}
		if err := d.Close(); err != nil {
			c.problem("close the store of %s: %v", n.name, err)
		}
	}
}

// goneInChannel is goneAccounted's cut rule for a record of a channel: a
// channel's epochs have manifests of their own, in the channel's store,
// which no API serves (GET /v1/records/_epochs/<epoch> reads the everyone
// store's). So an op gone after a compaction, named by no op of the
// history, is accounted for when the record has a newer op, pending the
// check of the channel's cuts once the nodes are stopped (checkChannelCuts
// reads the manifests from the office's store); with no newer op it is
// lost.
func (c *cluster) goneInChannel(w *ackedWrite, on *node, hist []histEntry, field, op string) (bool, string) {
	for _, e := range hist {
		if e.Op != "" && newerOp(e.Op, op) {
			k := fmt.Sprintf("%p/%s/%s", w, field, op)
			if !c.ch.cutSeen[k] {
				c.ch.cutSeen[k] = true
				c.ch.pendingCuts = append(c.ch.pendingCuts, pendingCut{w: w, on: on, field: field, op: op, newer: e.ref()})
			}
			return true, "gone with an old epoch of its channel, the record has a newer op " + e.ref() + " (checked against the channel's cuts at the end)"
		}
	}
	return false, "LOST: operation not in the history, named by no operation there, and the record has no newer operation"
}

// pendingCut is an op gone after a compaction of a channel, to be found
// covered by a cut of that channel (checkChannelCuts).
type pendingCut struct {
	w         *ackedWrite
	on        *node
	field, op string
	newer     string
}

// checkChannelCuts reads, once every node is stopped, the manifests of
// every epoch of every channel from the office's store (the _epochs
// records of each channel's store), and checks that each op some node's
// history lost to a compaction (goneInChannel) is covered by the cut of
// an epoch of the channel it was written in or of its record's final
// channel: the office held it when it compacted.
func (c *cluster) checkChannelCuts(ctx context.Context) {
	if len(c.ch.pendingCuts) == 0 {
		return
	}
	office := c.nodes[0]
	if office.proc != nil {
		return
	}
	d, err := datadir.OpenStore(office.dir)
	if err != nil {
		c.problem("open the store of %s to read the channels' manifests: %v", office.name, err)
		return
	}
	defer d.Close()
	cuts := map[string][]epochCut{}
	res, err := d.Query(ctx, query.Query{Prefix: "/ferry/ch/"})
	if err != nil {
		c.problem("read the channels' manifests on %s: %v", office.name, err)
		return
	}
	seen := map[string]bool{}
	for r := range res.Next() {
		if r.Error != nil {
			c.problem("read the channels' manifests on %s: %v", office.name, r.Error)
			break
		}
		rest := strings.TrimPrefix(r.Key, "/ferry/ch/")
		ch, _, _ := strings.Cut(rest, "/")
		i := strings.Index(r.Key, "/s/k/"+crdt.EpochsCollection+"/")
		if i < 0 || !strings.HasSuffix(r.Key, "/v") {
			continue
		}
		j := bytes.Index(r.Value, []byte(`{"number":`))
		if j < 0 {
			continue
		}
		var info struct {
			Number uint64            `json:"number"`
			Prev   string            `json:"prev"`
			Cut    map[string]string `json:"cut"`
		}
		if err := json.NewDecoder(bytes.NewReader(r.Value[j:])).Decode(&info); err != nil {
			c.problem("%s: a manifest of channel %s does not parse (%s): %v", office.name, ch, r.Key, err)
			continue
		}
		epoch, _, _ := strings.Cut(r.Key[i+len("/s/k/"+crdt.EpochsCollection+"/"):], "/")
		if seen[ch+"/"+epoch] {
			continue
		}
		seen[ch+"/"+epoch] = true
		ec := epochCut{epoch: epoch, cut: map[string]uint64{}}
		for wr, t := range info.Cut {
			if v, err := strconv.ParseUint(t, 16, 64); err == nil {
				ec.cut[wr] = v
			}
		}
		cuts[ch] = append(cuts[ch], ec)
	}
	res.Close()
	for ch, ecs := range cuts {
		var names []string
		for _, ec := range ecs {
			names = append(names, ec.epoch)
		}
		c.logf("channel %s: manifests of epochs %v read from %s's store", ch, names, office.name)
	}
	covered := func(ch, op string) string {
		t, wr, ok := parseOp(op)
		if !ok {
			return ""
		}
		for _, ec := range cuts[ch] {
			if ct, ok := ec.cut[wr]; ok && t <= ct {
				return ec.epoch
			}
		}
		return ""
	}
	lost := 0
	for _, p := range c.ch.pendingCuts {
		w := p.w
		final := c.ch.final[w.id]
		ep := covered(w.ch, p.op)
		if ep == "" && final != w.ch {
			ep = covered(final, p.op)
		}
		if ep != "" {
			c.countCompacted(w, p.field, false)
			continue
		}
		lost++
		if lost <= 25 {
			c.problem("acknowledged %s (step %d, on %s, %s/%s, channel %s then, %s at the end) %s op %s: gone from the history of %s (first seen there) after a compaction, and named by no op there (%s is newer), but no cut of an epoch of channel %s (nor %s) covers it: the office never held it (LOST)%s",
				w.kind, w.step, w.node.name, collection, w.id, w.ch, final, p.field, p.op, p.on.name, p.newer, w.ch, final, c.movedNote(w.id))
		}
	}
	if lost > 25 {
		c.problem("%d more acknowledged writes gone after a compaction and covered by no cut of their channel", lost-25)
	}
	c.logf("checked %d ops gone after a compaction of their channel against the channels' cuts: %d not covered", len(c.ch.pendingCuts), lost)
}
