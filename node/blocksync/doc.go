// Package blocksync is Ferry's fast catch-up: it moves every DAG block a
// replica is missing from a peer in one stream, instead of one bitswap
// round trip per block.
//
// go-ds-crdt learns a block's parents only after fetching it, and bitswap
// waits at least 20 ms between messages to a peer, so a replica that is far
// behind walks the DAG at about 48 blocks/s. Block sync moves every missing
// block in one stream instead: the requester gets the blocks reachable from
// the responder's heads that it does not have, checks each against its CID,
// writes them into its blockstore, and only then hands the responder's heads
// to go-ds-crdt, whose walk finds every block locally (the block service
// looks in the blockstore before asking bitswap).
//
// The package reads blocks only through crdt.ReadBlock (a block's links and
// priority): it knows nothing of go-ds-crdt's delta format.
//
// # Protocol (Protocol, one exchange per stream)
//
// Every message is a frame: a uvarint length n (n >= 1), then n bytes whose
// first byte is the frame type. A "heads list" below is a go-ds-crdt broadcast
// payload (see heads.Encode), so at most 1,024 CIDs in
// at most 256 KiB (the limits of the node's heads payloads).
//
//	requester -> responder
//	  REQUEST  0x01 | heads list          the requester's heads
//	  LOCATOR  0x02 | heads list          only if asked for (NEED_LOCATOR)
//	responder -> requester
//	  NEED_LOCATOR 0x10 | heads list      the requester's heads it lacks
//	  HEADER   0x11 | uvarint blocks | uvarint bytes | heads list (its heads)
//	  BLOCK    0x12 | uvarint len(cid) | cid | block data
//	  END      0x13
//
// 1. The requester opens a stream and sends REQUEST with its heads.
//
// 2. The requester "has" a CID when it sent it (in REQUEST or LOCATOR): it
// then has that block and every block below it. If the responder lacks some
// of the requester's heads (the requester wrote blocks the responder has not
// seen, e.g. a laptop that worked offline), it cannot tell where the two
// DAGs meet, and without help would send its whole DAG. So it answers
// NEED_LOCATOR with the heads it lacks; the requester walks its own DAG down
// from them and answers LOCATOR with blocks found at depths 1 to 16, then
// about every 1/8 deeper (a few per depth, at most 1,024, within a walk
// budget of defaultLocatorBudget blocks; see locator). This round happens
// at most once, and only when the requester has blocks the responder lacks.
// CIDs the responder does not have are ignored.
//
// 3. The responder computes the blocks to send: those reachable from its
// heads (at most 1,024 of them) and not reachable from the requester's
// CIDs, within its own blockstore (links of dag-pb nodes; blocks of other
// codecs have none; blocks it lacks are skipped). When every block involved
// carries a go-ds-crdt priority (the DAG height: a block's priority is
// greater than its children's), it walks both sides together from the top,
// highest priority first, and stops as soon as no block left to visit can
// be one to send: in-sync or nearly in-sync peers cost a handful of reads,
// not a walk of the whole DAG. Otherwise it computes the full closure of the
// requester's CIDs, then walks down from its heads without descending below
// that closure. Both give the same set.
//
// 4. The responder sends HEADER (its heads, and the number of blocks and
// bytes that follow), then one BLOCK per block, read from the blockstore as
// it goes (only the list of CIDs is held in memory), newest first, then END,
// and closes the stream. Any order would do: go-ds-crdt runs only after the
// whole transfer.
//
// 5. The requester checks every BLOCK: the CID parses and uses an accepted
// hash (boxo's verifcid default allowlist, as the block service does), the
// data is at most MaxBlockSize, hashing the data with the CID's prefix gives
// the CID, and no more blocks or bytes arrive than announced; END must come
// after exactly the announced blocks and bytes, followed by the end of the
// stream. Verified blocks are written with PutMany in chunks of
// defaultChunk. Any violation resets the stream and fails the fetch
// (wrapping ErrViolation); chunks already written stay (they are
// content-addressed and verified, so harmless).
//
// Deadlines are per frame (defaultIdle of inactivity), not per exchange,
// except the wait for the responder's first answer (defaultPrepare: it may
// wait for a serving slot and walk its DAG first). Frames are bounded in size
// on both sides; the requester's frames are bounded like a heads payload.
//
// # Concurrency
//
// At most one fetch runs per peer: a Fetch while another to the same peer
// runs joins it and returns the same result (its own ourHeads are not sent;
// blocks go to the shared blockstore either way). A running fetch is
// cancelled only when every caller waiting for it has gone, or on Close.
// The responder serves at most defaultMaxServing requests at once; others
// wait for a slot up to defaultSlotWait, then are reset. Several Syncers
// (one per channel, each on its own protocol, WithProtocol) can share one
// bound instead (WithServingSlots).
package blocksync
