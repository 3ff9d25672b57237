package blocksync

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/ferry-crm/ferry/internal/testnet"
	"github.com/ferry-crm/ferry/node/heads"
	blocks "github.com/ipfs/go-block-format"
)

// What a responder sends a requester may not make it panic; what it
// accepts must be well-formed.
func FuzzFrames(f *testing.F) {
	blk := blocks.NewBlock([]byte("fuzz block"))
	var frame bytes.Buffer
	body := binary.AppendUvarint(nil, uint64(len(blk.Cid().Bytes())))
	body = append(body, blk.Cid().Bytes()...)
	body = append(body, blk.RawData()...)
	_ = writeFrame(&frame, 'B', body)
	f.Add(frame.Bytes())
	payload := mustEncode(f, testnet.CIDs(f, "fuzz", 2))
	f.Add(append(binary.AppendUvarint(binary.AppendUvarint(nil, 2), 100), payload...))
	f.Add([]byte{0x05, 0x01, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for range 8 {
			if _, _, err := readFrame(r, 1<<16); err != nil {
				break
			}
		}
		if b, err := parseBlock(data); err == nil {
			if err := verifyBlock(b.Cid(), b.RawData()); err != nil {
				t.Fatalf("accepted block does not verify: %v", err)
			}
		}
		if n, size, hs, err := parseHeader(data); err == nil && (n < 0 || size < 0 || len(hs) > heads.MaxHeads) {
			t.Fatalf("header accepted: %d blocks, %d bytes, %d heads", n, size, len(hs))
		}
	})
}
