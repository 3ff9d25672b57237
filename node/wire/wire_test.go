package wire_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferry-crm/ferry/node/blocksync"
	"github.com/ferry-crm/ferry/node/digestsync"
	"github.com/ferry-crm/ferry/node/enrol"
	"github.com/ferry-crm/ferry/node/heads"
	"github.com/ferry-crm/ferry/node/peering"
	"github.com/ferry-crm/ferry/node/snapshot"
	"github.com/ferry-crm/ferry/node/wire"
)

// The store format is written once: the version and the topic follow it.
func TestVersionIsStoreFormat(t *testing.T) {
	major, _, _ := strings.Cut(wire.Version, ".")
	if major != strconv.Itoa(wire.StoreFormat) {
		t.Errorf("Version %s: major is not StoreFormat %d", wire.Version, wire.StoreFormat)
	}
	if want := "/format-" + strconv.Itoa(wire.StoreFormat); wire.TopicSuffix != want {
		t.Errorf("TopicSuffix %q, want %q", wire.TopicSuffix, want)
	}
	if got := wire.Topic("ferry"); got != "ferry/format-2" {
		t.Errorf("Topic(ferry) = %q", got)
	}
}

// Every protocol that carries store data is at the store format's version;
// enrolment and peer exchange carry none and stay at 1.0.0, so a node of
// another format is still found and enrolled.
func TestProtocolVersions(t *testing.T) {
	for _, id := range []protocol.ID{heads.Protocol, blocksync.Protocol, digestsync.Protocol, snapshot.Protocol} {
		if !strings.HasSuffix(string(id), "/"+wire.Version) {
			t.Errorf("%s does not carry the store format's version %s", id, wire.Version)
		}
	}
	if got := map[protocol.ID]bool{heads.Protocol: true, blocksync.Protocol: true, digestsync.Protocol: true, snapshot.Protocol: true}; len(got) != 4 {
		t.Errorf("protocol ids are not distinct")
	}
	for _, id := range []protocol.ID{enrol.Protocol, peering.Protocol} {
		if !strings.HasSuffix(string(id), "/1.0.0") {
			t.Errorf("%s changed version: nodes of another store format could no longer be told", id)
		}
	}
	if f, ok := wire.FormatOf(heads.Protocol, heads.ProtocolBase); !ok || f != wire.StoreFormat {
		t.Errorf("FormatOf(%s) = %d, %t", heads.Protocol, f, ok)
	}
}

func TestFormatOf(t *testing.T) {
	for id, want := range map[protocol.ID]int{
		"/ferry/heads/1.0.0":  1,
		"/ferry/heads/2.0.0":  2,
		"/ferry/heads/12.3.4": 12,
		"/ferry/heads/x.0.0":  0,
		"/ferry/heads/0.1.0":  0,
		"/ferry/heads/":       0,
		"/ferry/blocks/1.0.0": 0,
		"/ferry/headsX/1.0.0": 0,
	} {
		got, ok := wire.FormatOf(id, "/ferry/heads/")
		if got != want || ok != (want > 0) {
			t.Errorf("FormatOf(%s) = %d, %t; want %d", id, got, ok, want)
		}
	}
}

func TestMismatchNamesBothFormats(t *testing.T) {
	for theirs, upgrade := range map[int]string{1: "upgrade that node", 3: "upgrade this node"} {
		msg := wire.Mismatch("laptop", theirs)
		for _, want := range []string{"peer laptop", "store format " + strconv.Itoa(theirs), "store format 2", upgrade} {
			if !strings.Contains(msg, want) {
				t.Errorf("Mismatch(laptop, %d) = %q: no %q", theirs, msg, want)
			}
		}
	}
}

func TestChannelTopic(t *testing.T) {
	if got, want := wire.ChannelTopic("ferry", "west"), "ferry/format-2/ch/west"; got != want {
		t.Errorf("ChannelTopic(ferry, west) = %q, want %q", got, want)
	}
	for _, c := range []string{"west", "east", "a-b_c"} {
		got := wire.ChannelTopic("acme", c)
		if !strings.HasPrefix(got, wire.Topic("acme")+"/") {
			t.Errorf("ChannelTopic(acme, %s) = %q: not under the network's topic %q", c, got, wire.Topic("acme"))
		}
		if !strings.Contains(got, wire.TopicSuffix) {
			t.Errorf("ChannelTopic(acme, %s) = %q: no store format", c, got)
		}
		if got == wire.Topic("acme") || got == wire.ChannelTopic("other", c) {
			t.Errorf("ChannelTopic(acme, %s) = %q is not distinct", c, got)
		}
	}
	if wire.ChannelTopic("ferry", "west") == wire.ChannelTopic("ferry", "east") {
		t.Error("two channels share a topic")
	}
}

func TestChannelPrefix(t *testing.T) {
	if got, want := wire.ChannelPrefix("west"), protocol.ID("/ferry/ch/west"); got != want {
		t.Errorf("ChannelPrefix(west) = %q, want %q", got, want)
	}
	if wire.ChannelPrefix("west") == wire.ChannelPrefix("east") {
		t.Error("two channels share a prefix")
	}
	// A channel's protocols are never the everyone store's, and the
	// store format can still be read from them.
	id := wire.ChannelPrefix("west") + "/heads/" + wire.Version
	for _, everyone := range []protocol.ID{heads.Protocol, blocksync.Protocol, digestsync.Protocol, snapshot.Protocol} {
		if strings.HasPrefix(string(id), string(everyone)) || strings.HasPrefix(string(everyone), string(wire.ChannelPrefix("west"))) {
			t.Errorf("channel protocol %s overlaps %s", id, everyone)
		}
	}
	if f, ok := wire.FormatOf(id, string(wire.ChannelPrefix("west"))+"/heads/"); !ok || f != wire.StoreFormat {
		t.Errorf("FormatOf(%s) = %d, %t", id, f, ok)
	}
	// "/ferry/ch/we" must not be a prefix of another channel's ids once
	// the separator is added (what chanhost.ResetStreams matches on).
	if strings.HasPrefix(string(wire.ChannelPrefix("west"))+"/", string(wire.ChannelPrefix("we"))+"/") {
		t.Error("a channel's prefix with its separator matches another channel")
	}
}
