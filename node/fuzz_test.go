package node

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	blocks "github.com/ipfs/go-block-format"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Fuzz targets for everything a peer can send a node: heads payloads
// (GossipSub messages and the heads exchange), block-sync frames, peer
// exchange answers and snapshot entries, plus import lines from a user.
// None may panic; what they accept must be well-formed.

func FuzzHeadsPayload(f *testing.F) {
	good, _ := EncodeHeads(testCids(f, "fuzz", 3))
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x01, 0x55})
	f.Fuzz(func(t *testing.T, data []byte) {
		heads, err := ValidateHeadsPayload(data)
		if err != nil {
			return
		}
		if len(heads) > MaxHeads {
			t.Fatalf("%d heads accepted", len(heads))
		}
		again, err := EncodeHeads(heads)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ValidateHeadsPayload(again); err != nil {
			t.Fatalf("re-encoded heads refused: %v", err)
		}
	})
}

func FuzzBlockSyncFrames(f *testing.F) {
	blk := blocks.NewBlock([]byte("fuzz block"))
	var frame bytes.Buffer
	body := binary.AppendUvarint(nil, uint64(len(blk.Cid().Bytes())))
	body = append(body, blk.Cid().Bytes()...)
	body = append(body, blk.RawData()...)
	_ = bsWriteFrame(&frame, 'B', body)
	f.Add(frame.Bytes())
	heads, _ := EncodeHeads(testCids(f, "fuzz", 2))
	f.Add(append(binary.AppendUvarint(binary.AppendUvarint(nil, 2), 100), heads...))
	f.Add([]byte{0x05, 0x01, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for range 8 {
			if _, _, err := bsReadFrame(r, 1<<16); err != nil {
				break
			}
		}
		if b, err := bsParseBlock(data); err == nil {
			if err := bsVerifyBlock(b.Cid(), b.RawData()); err != nil {
				t.Fatalf("accepted block does not verify: %v", err)
			}
		}
		if n, size, hs, err := bsParseHeader(data); err == nil && (n < 0 || size < 0 || len(hs) > MaxHeads) {
			t.Fatalf("header accepted: %d blocks, %d bytes, %d heads", n, size, len(hs))
		}
	})
}

func FuzzPeersResponse(f *testing.F) {
	self, from := peer.ID("self"), peer.ID("from")
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Add(bytes.Repeat([]byte{0x0a, 0x02, 0x0a, 0x00}, 70))
	f.Fuzz(func(t *testing.T, data []byte) {
		infos, _, err := decodePeersResponse(data, self, from, true)
		if err != nil {
			return
		}
		if len(infos) > 64 {
			t.Fatalf("%d peers accepted", len(infos))
		}
		for _, i := range infos {
			if i.ID == self || i.ID == from || len(i.Addrs) > 16 {
				t.Fatalf("accepted %v", i)
			}
		}
	})
}

func FuzzSnapshotEntry(f *testing.F) {
	f.Add("/ferry/crdt/s/k/c/1/f/0000000000000001-A/v", []byte("x"))
	f.Add("/ferry/blocks/blocks/CIQA", []byte("x"))
	f.Add("/ferry/local/hlc", []byte("x"))
	f.Fuzz(func(t *testing.T, key string, val []byte) {
		if err := checkSnapshotEntry(key, val); err == nil &&
			!strings.HasPrefix(key, "/ferry/crdt/") && !strings.HasPrefix(key, "/ferry/blocks/") {
			t.Fatalf("accepted key %q", key)
		}
	})
}

func FuzzImportLines(f *testing.F) {
	f.Add(`{"id":"c1","last_name":"Smith","amount":12.5}` + "\n\n" + `{"id":"c2"}`)
	f.Add(`{"id":1}`)
	f.Add(`{"id":"x"} {"id":"y"}`)
	f.Add("not json\n")
	f.Fuzz(func(t *testing.T, input string) {
		recs, err := ReadJSONLines(strings.NewReader(input))
		if err != nil {
			return
		}
		for _, r := range recs {
			if r.ID == "" || r.Line < 1 {
				t.Fatalf("accepted record %+v", r)
			}
			if _, has := r.Fields["id"]; has {
				t.Fatalf("the id stayed among the fields: %+v", r)
			}
		}
	})
}

// FuzzInviteToken: a token is pasted by a person; any text gives a token
// that passes every check, or an error wrapping ErrBadToken, never a panic.
func FuzzInviteToken(f *testing.F) {
	good := Token{SwarmKey: strings.Repeat("ab", 32), Founder: "12D3KooWJ8FpH8FxyuCkTT2uYqjMHUjVQm868ka1ZnG52peVYWq2",
		Topic: "ferry", Office: "12D3KooWJ8FpH8FxyuCkTT2uYqjMHUjVQm868ka1ZnG52peVYWq2",
		Addrs:  []string{"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWJ8FpH8FxyuCkTT2uYqjMHUjVQm868ka1ZnG52peVYWq2"},
		Secret: strings.Repeat("01", 32), Name: "lap", Role: RoleLaptop}
	f.Add(good.Encode())
	f.Add(tokenPrefix)
	f.Add(tokenPrefix + "e30")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrBadToken) {
				t.Fatalf("error %v does not wrap ErrBadToken", err)
			}
			return
		}
		if _, err := tok.PSK(); err != nil || len(tok.OfficeAddrs()) != len(tok.Addrs) {
			t.Fatalf("accepted token %+v: psk %v, addrs %v", tok, err, tok.OfficeAddrs())
		}
		if again, err := ParseToken(tok.Encode()); err != nil || again.Secret != tok.Secret {
			t.Fatalf("re-encoded token does not parse back: %v", err)
		}
	})
}

// FuzzDigestAndJoinFrames: the JSON frames of /ferry/digest/1.0.0 (request
// and answer) and of /ferry/join/1.0.0, as a peer may send them. Decoding
// never panics, and an accepted digest is exactly the hex it came from.
func FuzzDigestAndJoinFrames(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"buckets":[0,255]}`))
	f.Add([]byte(`{"buckets":["` + strings.Repeat("ab", 32) + `"],"records":{"contacts/c1":"00"}}`))
	f.Add([]byte(`{"secret":"00","name":"x"}`))
	f.Add([]byte(`{"error":"no"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var req digestRequest
		_ = json.Unmarshal(data, &req)
		var resp digestResponse
		if json.Unmarshal(data, &resp) == nil {
			for _, s := range resp.Buckets {
				if d, err := parseDigest(s); err == nil && d.String() != strings.ToLower(s) {
					t.Fatalf("digest %q parsed as %s", s, d)
				}
			}
		}
		var jr joinRequest
		_ = json.Unmarshal(data, &jr)
		var rep joinReply
		_ = json.Unmarshal(data, &rep)
	})
}
