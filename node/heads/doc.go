// Package heads is the one owner of how a node's heads (the current heads
// of go-ds-crdt's Merkle-DAG) travel between nodes. Heads travel five ways,
// all of them here:
//
//   - GossipSub: go-ds-crdt's own announcements (the heads of its writes,
//     and its periodic rebroadcast) go through Broadcaster, a go-ds-crdt
//     Broadcaster over a GossipSub topic (NewPubSub). Gate holds received
//     heads back until the node is ready to merge them.
//   - Exchange on connect: whenever a connection comes up, Service runs a
//     heads exchange over a direct stream (Protocol): each side sends its
//     heads, and the peer's heads go to Config.Receive.
//   - Announce on change: go-ds-crdt announces only the heads of its own
//     writes, so a node that merged a peer's heads would not pass them on.
//     Service.Changed (called from go-ds-crdt's merge hooks) starts a
//     debounced exchange with every connected peer when our heads changed.
//   - Periodic exchange: every Config.Interval, an exchange with every
//     connected peer.
//   - Sync now: Service.ExchangeAll exchanges with every connected peer at
//     once and reports each peer's result; Service.Exchange does one peer.
//
// Every payload, on pubsub or on the exchange stream, is a go-ds-crdt
// broadcast payload (see Encode and Decode), bounded by MaxPayload bytes
// and MaxHeads heads.
//
// Protocol's version and the GossipSub topic (wire.Topic) carry the store
// format (package wire), so nodes of different formats never exchange
// heads. FormatDetector finds the peers that advertise another version of
// Protocol, logs each once and reports them; an exchange with such a peer
// fails with ErrIncompatible and the same message.
//
// A channel (its own DAG) has its own heads: its Service runs on a protocol
// under wire.ChannelPrefix (Config.Protocol) and only with the peers granted
// the channel (Config.Allow), and its Broadcaster on its own topic
// (wire.ChannelTopic). TopicGate, given to NewPubSub, keeps GossipSub from
// sending a channel's topic to peers not granted it.
package heads
