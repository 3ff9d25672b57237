package main

// The channel steps (see channels.go): grants and ungrants, moves, and
// writes into a channel not granted.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// isChanStep: the channel stream makes step a channel step.
func isChanStep(seed uint64, step int) (*rand.Rand, bool) {
	r := stepRand(seed^chanSalt, step)
	return r, r.IntN(100) < chanShare
}

// chanStep runs a channel step instead of the step's usual draw when the
// channel stream says so.
func (c *cluster) chanStep(ctx context.Context, seed uint64, step int) bool {
	r, ok := isChanStep(seed, step)
	if !ok || len(c.nodes) < 2 {
		return false
	}
	c.stats.ch.steps++
	switch x := r.IntN(100); {
	case x < 40:
		c.opGrant(ctx, r)
	case x < 75:
		c.opMove(ctx, r)
	default:
		c.opNotGranted(ctx, r)
	}
	return true
}

// opGrant: the office grants a laptop a channel it lacks or ends one of
// its grants, sometimes after the laptop edited that channel offline.
func (c *cluster) opGrant(ctx context.Context, r *rand.Rand) {
	laptop := c.nodes[1+r.IntN(len(c.nodes)-1)]
	coin, pick := r.IntN(2), r.IntN(1<<30)
	withEdits, edits, back := r.IntN(100) < 50, 1+r.IntN(2), r.IntN(100) < 65
	draws := rand.New(rand.NewPCG(r.Uint64(), r.Uint64()))
	have := c.grantedTo(laptop)
	var lack []string
	for _, ch := range channelNames {
		if !c.holds(laptop, ch) {
			lack = append(lack, ch)
		}
	}
	grant := len(have) == 0 || (len(lack) > 0 && coin == 0)
	office := c.nodes[0]
	if grant {
		ch := lack[pick%len(lack)]
		c.logf("grant: %s gets %s (has %v)", laptop.name, ch, have)
		c.grantCmd(ctx, office, laptop, ch, true)
		return
	}
	ch := have[pick%len(have)]
	c.logf("ungrant: %s loses %s (has %v; offline edits first: %t)", laptop.name, ch, have, withEdits)
	wentOffline := false
	if withEdits {
		if laptop.running() && !laptop.offline {
			if res := c.ferry(ctx, laptop, "offline"); res.ok() {
				laptop.offline, wentOffline = true, true
				c.stats.partitions++
			} else {
				c.problem("offline on %s: %s", laptop.name, res.brief())
			}
		}
		var ids []string
		for k := range 10 {
			if id := fmt.Sprintf("c%02d", k); c.homeOf(id) == ch {
				ids = append(ids, id)
			}
		}
		for range edits {
			id := fmt.Sprintf("h%d", c.step)
			if len(ids) > 0 {
				id = ids[draws.IntN(len(ids))]
			} else {
				c.ch.home[id] = ch
			}
			args, values := putArgs(draws, id, "")
			c.put(ctx, "put-before-ungrant", laptop, id, args, values)
		}
	}
	if c.grantCmd(ctx, office, laptop, ch, false) && withEdits {
		c.stats.ch.handOver++
	}
	if wentOffline && back {
		if res := c.ferry(ctx, laptop, "online"); res.ok() {
			laptop.offline = false
		} else {
			c.problem("online on %s: %s", laptop.name, res.brief())
		}
	}
}

// grantCmd runs `ferry grant|ungrant LAPTOP CH` on the office (through
// its node, or the store itself when it is down) and updates the model
// when it is acknowledged. A refusal is a problem unless the office's
// disk is full.
func (c *cluster) grantCmd(ctx context.Context, office, laptop *node, ch string, grant bool) bool {
	verb := "grant"
	if !grant {
		verb = "ungrant"
	}
	at := time.Now()
	res := c.ferry(ctx, office, verb, laptop.name, ch)
	if !res.ok() {
		if res.err == nil && office.full {
			c.logf("%s on %s (disk full) refused: %s", verb, office.name, res.brief())
			return false
		}
		c.problem("%s %s %s on %s (disk free): %s", verb, laptop.name, ch, office.name, res.brief())
		return false
	}
	if office.full {
		c.acceptedOnFull(office, verb, res)
	}
	c.ch.grants[laptop][ch] = grant
	if grant {
		c.ch.ever[laptop][ch] = true
		c.stats.ch.grants++
	} else {
		c.stats.ch.ungrants++
	}
	c.ch.events = append(c.ch.events, grantEvent{step: c.step, laptop: laptop, channel: ch, granted: grant, at: at})
	return true
}

// opMove: a node edits the routing field of a record of a channel it
// holds, which the office then moves to the other channel.
func (c *cluster) opMove(ctx context.Context, r *rand.Rand) {
	n := c.anyNode(r)
	pick, imported, more := r.IntN(1<<30), r.IntN(100) < 20, r.IntN(100) < 50
	draws := rand.New(rand.NewPCG(r.Uint64(), r.Uint64()))
	var cands []string
	if imported && len(c.importedIDs) > 0 {
		for k := range 10 {
			cands = append(cands, c.importedIDs[(pick+k*7919)%len(c.importedIDs)])
		}
	} else {
		for k := range 10 {
			cands = append(cands, fmt.Sprintf("c%02d", k))
		}
	}
	// Records an acknowledged write made and none deleted since.
	cands = slices.DeleteFunc(cands, func(id string) bool {
		h := c.homeOf(id)
		deleted, written := c.ch.deleted[id]
		return h == "" || !c.holds(n, h) || !written || deleted
	})
	if len(cands) == 0 {
		c.logf("move: %s holds no live record to move", n.name)
		return
	}
	id := cands[pick%len(cands)]
	from := c.homeOf(id)
	to := channelNames[0]
	if to == from {
		to = channelNames[1]
	}
	// The writer must show the record in its channel: a put on a record
	// it does not show would create another one.
	res := c.ferry(ctx, n, "get", collection, id, "--json")
	var rec recordJSON
	if !res.ok() || json.Unmarshal([]byte(res.stdout), &rec) != nil || chanOf(rec.Fields) != from {
		c.stats.ch.movesSkipped++
		c.logf("move: %s does not show %s/%s in channel %s: not now (%s)", n.name, collection, id, from, res.brief())
		return
	}
	args := []string{"put", collection, id, routingField + "=" + to}
	values := map[string]any{routingField: to}
	if more {
		f := fieldNames[draws.IntN(len(fieldNames))]
		v, text := randomValue(draws, f)
		args, values[f] = append(args, f+"="+text), v
	}
	args = append(args, "--json")
	c.logf("move: %s moves %s/%s from %s to %s", n.name, collection, id, from, to)
	before := len(c.acked)
	c.put(ctx, "move", n, id, args, values)
	if len(c.acked) > before {
		c.ch.home[id] = to
		c.ch.moved[id] = append(c.ch.moved[id], fmt.Sprintf("%s to %s at step %d on %s", from, to, c.step, n.name))
		c.stats.ch.moves++
	}
}

// opNotGranted: a laptop writes into a channel it is neither granted nor
// holds: refused, and recorded as a failed write whose value must show
// nowhere.
func (c *cluster) opNotGranted(ctx context.Context, r *rand.Rand) {
	first, pick, withImport := r.IntN(1<<30), r.IntN(1<<30), r.IntN(100) < 30
	count := 5 + r.IntN(16)
	draws := rand.New(rand.NewPCG(r.Uint64(), r.Uint64()))
	laptops := c.nodes[1:]
	for k := range laptops {
		l := laptops[(first+k)%len(laptops)]
		var lack []string
		for _, ch := range channelNames {
			if !c.holds(l, ch) {
				lack = append(lack, ch)
			}
		}
		if len(lack) == 0 {
			continue
		}
		cs, _, err := c.channels(ctx, l)
		if err != nil {
			c.problem("write into a channel not granted: %v", err)
			return
		}
		held, leaving := heldStates(cs)
		lack = slices.DeleteFunc(lack, func(ch string) bool {
			return slices.Contains(held, ch) || slices.Contains(leaving, ch)
		})
		if len(lack) == 0 {
			c.logf("write into a channel not granted: %s still holds %v (its ungrant not heard yet)", l.name, append(held, leaving...))
			continue
		}
		c.writeNotGranted(ctx, draws, l, lack[pick%len(lack)], withImport, count)
		return
	}
	c.logf("write into a channel not granted: every laptop holds every channel")
}

// writeNotGranted makes laptop l write into channel ch (not granted, not
// held): a put of a fresh record, or an import of count fresh records,
// each with a unique value.
func (c *cluster) writeNotGranted(ctx context.Context, r *rand.Rand, l *node, ch string, withImport bool, count int) {
	const why = "refused: channel not granted"
	var lines []map[string]any
	if withImport {
		for k := range count {
			f := fieldNames[1+r.IntN(len(fieldNames)-1)]
			v, _ := randomValue(r, f)
			lines = append(lines, map[string]any{"id": fmt.Sprintf("ng%d-%d", c.step, k), markerField: c.marker(), routingField: ch, f: v})
		}
	} else {
		lines = []map[string]any{{"id": fmt.Sprintf("ng%d", c.step), markerField: c.marker(), routingField: ch}}
	}
	for _, l := range lines {
		c.ch.home[l["id"].(string)] = ch
		c.touched[l["id"].(string)]++
	}
	var res result
	if withImport {
		path, err := c.writeImport(lines)
		if err != nil {
			c.problem("write import file: %v", err)
			return
		}
		c.logf("not granted: %s imports %d records into %s", l.name, len(lines), ch)
		res = c.ferry(ctx, l, "import", collection, path)
	} else {
		args := []string{"put", collection, lines[0]["id"].(string), markerField + "=" + lines[0][markerField].(string), routingField + "=" + ch}
		if r.IntN(2) == 0 {
			v, text := randomValue(r, "city")
			lines[0]["city"] = v
			args = append(args, "city="+text)
		}
		c.logf("not granted: %s puts a record into %s", l.name, ch)
		res = c.ferry(ctx, l, append(args, "--json")...)
	}
	c.stats.ch.notGranted++
	msg := res.stderr + res.stdout
	switch {
	case res.ok():
		c.problem("%s wrote into channel %s, which it is not granted and does not hold (step %d): exit 0: %s", l.name, ch, c.step, oneLine(strings.TrimSpace(res.stdout)))
	case res.err != nil:
	case strings.Contains(msg, "not held") || strings.Contains(msg, "not granted"):
	case l.full && (strings.Contains(msg, "not written") || strings.Contains(msg, "no space left on device")):
	default:
		c.problem("%s's write into channel %s (not granted) failed, but not as a write into a channel not held should (\"not held\" or \"not granted\"): %s", l.name, ch, res.brief())
	}
	for i, ln := range lines {
		c.failed = append(c.failed, &failedWrite{kind: "not-granted", why: why, step: c.step, node: l, id: ln["id"].(string), field: markerField, value: ln[markerField], sample: i < historySample})
		c.stats.ch.refusedAbsent++
	}
}
