package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/schema"
)

// Channels (issue 14, docs/design/channels.md): a collection routed by a
// field keeps each record in the channel the field names, each channel its
// own go-ds-crdt store with its own blocks and protocols; an office holds
// every channel, a laptop the channels granted to it. benchChannels
// measures the targets against baselines measured in the same run:
//
//  1. clean sync: a laptop granted 1 of N channels against one granted all
//     N, both from one office holding the routed contacts (time until it
//     holds its channels' state, disk, bytes received); for information,
//     the laptop granted all N against the unrouted full copy;
//  2. propagation laptop1 → office → laptop2 of single-field Puts into one
//     channel, office holding N channels (laptops granted all, or only
//     that one; and, a diagnostic, laptops that reconnected once they held
//     their channels), against the same with the schema unrouted (one
//     store);
//  3. catch-up of a fresh laptop granted one channel on single-field
//     edits the office made in that channel, against the same unrouted;
//     for information, the office's Router.Put and Router.Get with N
//     channels against unrouted.
//
// The schema is the benchmark's (crm.yaml) with contacts given a field
// territory (enum t0..t<N-1>); routed: channel: {field: territory,
// default: t0}; unrouted: the same field, no routing. Contact c<i> gets
// territory t<i mod N>.
//
// This file holds the schemas, the contacts and benchChannels; the nodes
// are started and compared in channels_nodes.go, the three parts run in
// channels_cleansync.go, channels_propagation.go and channels_catchup.go,
// and their rows and notes are made in channels_report.go.

// chanField is the routing field added to contacts.
const chanField = "territory"

const (
	// chanSettle bounds the waits for nodes to connect, take their
	// channels and converge before a measurement.
	chanSettle = 2 * time.Minute
	// chanEditedIndex is the channel the propagation and catch-up edits
	// go into (t3, or the last one with fewer channels).
	chanEditedIndex = 3
)

// chanName is the i-th channel (and territory value).
func chanName(i int) string { return "t" + strconv.Itoa(i) }

// chanNames are channels t0..t<n-1>.
func chanNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = chanName(i)
	}
	return out
}

// editedChannel is the channel the propagation and catch-up edits go into.
func (e *env) editedChannel() string {
	return chanName(min(chanEditedIndex, e.cfg.channels-1))
}

// chanSchemas returns the benchmark schema with the field territory (enum
// t0..t<n-1>) added to contacts: routed by it (channel: {field:
// territory, default: t0}: the default is a channel of the enum, so that
// the network has exactly n channels and no "unassigned" one) and not
// routed.
func (e *env) chanSchemas(n int) (routed, flat *schema.Schema, err error) {
	build := func(route bool) (*schema.Schema, error) {
		sc, err := schema.Parse(e.schema)
		if err != nil {
			return nil, fmt.Errorf("parse schema: %w", err)
		}
		c := sc.Collections[contactsCollection]
		if c == nil {
			return nil, fmt.Errorf("channels: the schema has no collection %s", contactsCollection)
		}
		if c.Fields[chanField] != nil {
			return nil, fmt.Errorf("channels: %s has a field %s already", contactsCollection, chanField)
		}
		c.Fields[chanField] = &schema.Field{Type: schema.TypeEnum, Values: chanNames(n)}
		if route {
			c.Channel = &schema.Routing{Field: chanField, Default: chanName(0)}
		}
		if err := sc.Validate(); err != nil {
			return nil, fmt.Errorf("channels: schema with %s: %w", chanField, err)
		}
		return sc, nil
	}
	if routed, err = build(true); err != nil {
		return nil, nil, err
	}
	flat, err = build(false)
	return routed, flat, err
}

// chanContacts returns contacts c0..c(n-1), contact c<i> with territory
// t<i mod channels>.
func (e *env) chanContacts(n, channels int) []crdt.ImportRecord {
	recs := e.contacts(n)
	for i := range recs {
		recs[i].Fields[chanField] = chanName(i % channels)
	}
	return recs
}

// inChannel returns the records of recs whose territory is ch.
func inChannel(recs []crdt.ImportRecord, ch string) []crdt.ImportRecord {
	var out []crdt.ImportRecord
	for _, r := range recs {
		if r.Fields[chanField] == ch {
			out = append(out, r)
		}
	}
	return out
}

// stateOf is the expected state of recs (their fields), with want (the
// final state of the edited records) over it.
func stateOf(recs []crdt.ImportRecord, want map[string]map[string]any) map[string]map[string]any {
	out := fieldState(recs)
	for id := range out {
		if w, ok := want[id]; ok {
			out[id] = w
		}
	}
	return out
}

// benchChannels runs the three parts and assembles their rows.
func (e *env) benchChannels(ctx context.Context) (res result, err error) {
	c := e.cfg
	routed, flat, err := e.chanSchemas(c.channels)
	if err != nil {
		return res, err
	}
	notes := []string{fmt.Sprintf("Channels (issue 14): the benchmark schema (crm.yaml) with a field territory added to contacts, `{type: enum, values: [t0 … t%d]}`; routed: `channel: {field: territory, default: t0}` on contacts (the default is one of the %d channels, so that the network has exactly %d and no `unassigned` one); unrouted (every baseline but the clean sync's): the same field, no routing, so the same records in one store. Contact c<i> (the i-th line of gen_records.py's output) gets territory t<i mod %d>, so each channel holds every %d-th contact. Laptops are enrolled (Store.AddMember) and, routed, granted their channels (Store.Grant on the office's everyone store, what `ferry grant` does) before anything else is written. Offices always run with network on (loopback TCP, no peer until the laptops dial them): a node started without network does not show its channels. The machine is shared (2 cores, other engineers' work beside this run): times are rough, ratios of runs measured back to back less so.",
		c.channels-1, c.channels, c.channels, c.channels, c.channels)}
	var rows []row
	cs, err := e.chanCleanSync(ctx, routed, flat)
	if err != nil {
		return res, fmt.Errorf("clean sync: %w", err)
	}
	rows, notes = append(rows, cs.rows...), append(notes, cs.notes...)
	pr, err := e.chanPropagation(ctx, routed, flat)
	if err != nil {
		return res, fmt.Errorf("propagation: %w", err)
	}
	rows, notes = append(rows, pr.rows...), append(notes, pr.notes...)
	cu, err := e.chanCatchup(ctx, routed, flat)
	if err != nil {
		return res, fmt.Errorf("catch-up: %w", err)
	}
	rows, notes = append(rows, cu.rows...), append(notes, cu.notes...)
	return result{rows: rows, notes: notes}, nil
}

// errChannelCount: --channels is out of range.
var errChannelCount = errors.New("--channels: want 1 to 100 channels")
