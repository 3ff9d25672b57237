// Package p2p builds a node's libp2p parts that carry no Ferry protocol of
// their own: the host (TCP and QUIC, Noise, an optional private-network
// key and connection gater) and bitswap as go-ds-crdt's DAG syncer, with a
// timeout on every fetch. A channel's bitswap runs on the channel's
// protocol prefix, serves only the peers granted the channel and has few
// workers (WithProtocolPrefix, WithAllow, WithSmallEngine).
package p2p
