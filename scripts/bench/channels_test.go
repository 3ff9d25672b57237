package main

import (
	"testing"

	"github.com/ferry-crm/ferry/schema"
)

// The channels benchmark's schemas: contacts get territory (enum t0..t9),
// routed by it (default t0) or not; contact c<i> is in t<i mod 10>.
func TestChanSchemasAndContacts(t *testing.T) {
	e := &env{cfg: config{channels: 10}, schema: crmSchema, data: dataset{lines: contactLines(25, 1)}}
	routed, flat, err := e.chanSchemas(10)
	if err != nil {
		t.Fatal(err)
	}
	rc, fc := routed.Collections[contactsCollection], flat.Collections[contactsCollection]
	if fc.Channel != nil {
		t.Errorf("unrouted contacts are routed: %v", fc.Channel)
	}
	if rc.Channel == nil || rc.Channel.Field != chanField || rc.Channel.Default != "t0" {
		t.Fatalf("routing %v, want field %s, default t0", rc.Channel, chanField)
	}
	for _, c := range []*schema.Collection{rc, fc} {
		f := c.Fields[chanField]
		if f == nil || f.Type != schema.TypeEnum || len(f.Values) != 10 || f.Values[0] != "t0" || f.Values[9] != "t9" {
			t.Errorf("territory field %+v", f)
		}
	}
	if len(flat.Collections) != len(routed.Collections) {
		t.Errorf("collections differ: %v and %v", flat.Names(), routed.Names())
	}
	recs := e.chanContacts(25, 10)
	for i, r := range recs {
		ch, err := rc.ChannelOf(r.Fields)
		if err != nil {
			t.Fatal(err)
		}
		if want := chanName(i % 10); ch != want {
			t.Errorf("%s routes to %s, want %s", r.ID, ch, want)
		}
	}
	if got := inChannel(recs, "t3"); len(got) != 3 || got[0].ID != "c3" || got[2].ID != "c23" {
		t.Errorf("t3 holds %d contacts", len(got))
	}
	if got := e.editedChannel(); got != "t3" {
		t.Errorf("edited channel %s, want t3", got)
	}
	e.cfg.channels = 2
	if got := e.editedChannel(); got != "t1" {
		t.Errorf("edited channel of 2 %s, want t1", got)
	}
}
