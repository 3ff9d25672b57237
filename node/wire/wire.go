// Package wire is the version of what Ferry's replication protocols carry:
// the store format. Every protocol that carries store data (heads, blocks,
// digests, snapshots) and the GossipSub heads topic are versioned by it, so
// that nodes of different store formats never exchange replicated data;
// enrolment and peer exchange carry none and keep their own versions.
//
// The convention: a replication protocol's major version is the store
// format its data is in (/ferry/heads/1.0.0 is store format 1). That is how
// a node learns a peer's store format from the protocols the peer
// advertises (libp2p identify) and can say what is wrong.
package wire

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// StoreFormat is the store format this node reads, writes and replicates
// (crdt.Format).
const StoreFormat = crdt.Format

// Version is the version of every replication protocol: its major number is
// StoreFormat (checked by this package's tests).
const Version = "2.0.0"

// TopicSuffix is appended to the network's topic (the name the user
// configures, e.g. "ferry") to form the GossipSub topic of heads
// announcements, so that announcements of another store format are never
// mixed in.
const TopicSuffix = "/format-2"

// Topic is the GossipSub topic of heads announcements in network: network
// (as configured) followed by TopicSuffix.
func Topic(network string) string { return network + TopicSuffix }

// ChannelTopic is the GossipSub topic of heads announcements of channel in
// network: Topic(network) followed by "/ch/" and the channel's name, e.g.
// "ferry/format-2/ch/west". It carries the store format like Topic.
func ChannelTopic(network, channel string) string {
	return Topic(network) + "/ch/" + channel
}

// ChannelPrefix is the prefix of every protocol id scoped to channel:
// "/ferry/ch/" followed by the channel's name. A channel's protocols are
// ChannelPrefix(c) + "/" + the protocol's own path (e.g.
// "/ferry/ch/west/heads/2.0.0", or bitswap's "/ferry/ch/west/ipfs/bitswap/1.2.0").
func ChannelPrefix(channel string) protocol.ID {
	return protocol.ID("/ferry/ch/" + channel)
}

// FormatOf returns the store format of id, a version of the protocol whose
// ids start with base (e.g. "/ferry/heads/"): its major version. ok is
// false if id is not a version of that protocol.
func FormatOf(id protocol.ID, base string) (format int, ok bool) {
	v, found := strings.CutPrefix(string(id), base)
	if !found {
		return 0, false
	}
	major, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(major)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// PeerFormat returns the store format of peer p as its advertised protocols
// (in ps, learned by identify) tell it, for the protocol whose ids start
// with base. ours is true when p speaks base+Version; otherwise format is
// the highest other version p speaks, and known is false when p speaks no
// version of it (identify not done yet, or not a Ferry node).
func PeerFormat(ps peerstore.Peerstore, p peer.ID, base string) (format int, ours, known bool) {
	protos, err := ps.GetProtocols(p)
	if err != nil {
		return 0, false, false
	}
	for _, id := range protos {
		if id == protocol.ID(base+Version) {
			return StoreFormat, true, true
		}
		if f, ok := FormatOf(id, base); ok && f > format {
			format, known = f, true
		}
	}
	return format, false, known
}

// Mismatch is the message for a peer (who: its name or id) that runs store
// format theirs: it names both formats and says which node to upgrade.
func Mismatch(who string, theirs int) string {
	if theirs < StoreFormat {
		return fmt.Sprintf("peer %s runs store format %d (an earlier Ferry release), this node runs store format %d: "+
			"not syncing with it; upgrade that node (its data migrates on start)", who, theirs, StoreFormat)
	}
	return fmt.Sprintf("peer %s runs store format %d (a later Ferry release), this node runs store format %d: "+
		"not syncing with it; upgrade this node", who, theirs, StoreFormat)
}
