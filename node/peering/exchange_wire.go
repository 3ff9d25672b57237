package peering

import (
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	"github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/encoding/protowire"
)

// The peer exchange's wire format (see Protocol) and its limits.

const (
	maxPeersPerResponse = 64
	maxPeerIDBytes      = 64
	// maxPeersFrame fits a response at the limits:
	// 64 * (4 + 2+64 + 16*(3+128)) = 138,624 bytes.
	maxPeersFrame   = 160 << 10
	maxPeersRequest = 1 << 10
)

// readFrame reads one uvarint-length-prefixed frame of at most limit bytes.
func readFrame(r io.Reader, limit int) ([]byte, error) {
	mr := msgio.NewVarintReaderSize(r, limit)
	msg, err := mr.ReadMsg()
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(msg))
	copy(out, msg)
	mr.ReleaseMsg(msg)
	return out, nil
}

// checkPeersRequest validates a PeersRequest: well-formed protobuf; all
// fields are unknown (ignored) in this version.
func checkPeersRequest(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// encodePeersResponse encodes a PeersResponse.
func encodePeersResponse(infos []peer.AddrInfo) []byte {
	var out, rec []byte
	for _, info := range infos {
		rec = rec[:0]
		rec = protowire.AppendTag(rec, 1, protowire.BytesType)
		rec = protowire.AppendBytes(rec, []byte(info.ID))
		for _, a := range info.Addrs {
			rec = protowire.AppendTag(rec, 2, protowire.BytesType)
			rec = protowire.AppendBytes(rec, a.Bytes())
		}
		out = protowire.AppendTag(out, 1, protowire.BytesType)
		out = protowire.AppendBytes(out, rec)
	}
	return out
}

// decodePeersResponse decodes a PeersResponse received from peer from. It
// fails (the whole response is to be dropped) on malformed protobuf, more
// than maxPeersPerResponse records or more than maxAddrsPerPeer addresses in
// a record. Records with an invalid or oversized peer id, for this host,
// for from, or duplicated are dropped and counted; so are records left
// without a usable address (see usablePeerAddr) once invalid ones are dropped.
func decodePeersResponse(b []byte, self, from peer.ID, loopbackOK bool) (infos []peer.AddrInfo, dropped int, err error) {
	records := 0
	seen := map[peer.ID]bool{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, 0, fmt.Errorf("response: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num != 1 {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil, 0, fmt.Errorf("response field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		if typ != protowire.BytesType {
			return nil, 0, fmt.Errorf("response: peers field has wire type %d", typ)
		}
		rec, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, 0, fmt.Errorf("response: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if records++; records > maxPeersPerResponse {
			return nil, 0, fmt.Errorf("response lists more than %d peers", maxPeersPerResponse)
		}
		info, ok, err := decodePeerRecord(rec, loopbackOK)
		if err != nil {
			return nil, 0, fmt.Errorf("peer record %d: %w", records, err)
		}
		if !ok || info.ID == self || info.ID == from || seen[info.ID] {
			dropped++
			continue
		}
		seen[info.ID] = true
		infos = append(infos, info)
	}
	return infos, dropped, nil
}

// decodePeerRecord decodes a PeerRecord. ok is false when the record must
// be dropped (bad id, no usable address); err is set when the response is
// structurally invalid.
func decodePeerRecord(b []byte, loopbackOK bool) (info peer.AddrInfo, ok bool, err error) {
	var rawID []byte
	var rawAddrs [][]byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return info, false, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case (num == 1 || num == 2) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return info, false, protowire.ParseError(n)
			}
			b = b[n:]
			if num == 1 {
				if rawID != nil {
					return info, false, errors.New("two peer ids")
				}
				rawID = v
				if rawID == nil {
					rawID = []byte{}
				}
			} else {
				if len(rawAddrs) == maxAddrsPerPeer {
					return info, false, fmt.Errorf("more than %d addresses", maxAddrsPerPeer)
				}
				rawAddrs = append(rawAddrs, v)
			}
		case num == 1 || num == 2:
			return info, false, fmt.Errorf("field %d has wire type %d", num, typ)
		default:
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return info, false, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	if len(rawID) == 0 || len(rawID) > maxPeerIDBytes {
		return info, false, nil
	}
	id, idErr := peer.IDFromBytes(rawID)
	if idErr != nil {
		return info, false, nil
	}
	info.ID = id
	for _, raw := range rawAddrs {
		if len(raw) == 0 || len(raw) > maxAddrBytes {
			continue
		}
		a, err := multiaddr.NewMultiaddrBytes(raw)
		if err != nil {
			continue
		}
		if u, usable := usablePeerAddr(a, id, loopbackOK); usable && !containsAddr(info.Addrs, u) {
			info.Addrs = append(info.Addrs, u)
		}
	}
	return info, len(info.Addrs) > 0, nil
}
