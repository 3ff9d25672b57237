package crdt

import (
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	pb "github.com/ipfs/go-ds-crdt/pb"
	"google.golang.org/protobuf/proto"
)

func TestClockIsMonotonicAndObserves(t *testing.T) {
	wall := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return wall }
	c := NewClock(now, 0)
	a, b := c.Now(), c.Now()
	if !(b > a) || a.Wall() != wall || b.Logical() != 1 {
		t.Fatalf("same millisecond: %s then %s", a, b)
	}
	mu.Lock()
	wall = wall.Add(-time.Hour) // the physical clock goes back
	mu.Unlock()
	if d := c.Now(); d <= b {
		t.Fatalf("clock went back: %s after %s", d, b)
	}
	future := TimestampOf(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	c.Observe(future)
	if e := c.Now(); e <= future {
		t.Fatalf("after observing %s, Now gave %s", future, e)
	}
	if c.Last() <= future {
		t.Fatal("Last is below an issued timestamp")
	}
}

func TestClockConcurrentUse(t *testing.T) {
	c := NewClock(nil, 0)
	seen := sync.Map{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if _, dup := seen.LoadOrStore(c.Now(), true); dup {
					t.Error("duplicate timestamp")
				}
			}
		}()
	}
	wg.Wait()
}

func TestTimestampStringOrderAndParse(t *testing.T) {
	a, b := Timestamp(0x0123), Timestamp(0xabcdef0123)
	if !(a.String() < b.String()) {
		t.Fatal("string order differs from numeric order")
	}
	for _, ts := range []Timestamp{0, a, b, ^Timestamp(0)} {
		got, err := ParseTimestamp(ts.String())
		if err != nil || got != ts {
			t.Fatalf("round trip %s: %v %v", ts, got, err)
		}
	}
	for _, bad := range []string{"", "123", "zzzzzzzzzzzzzzzz", "00000000000000001"} {
		if _, err := ParseTimestamp(bad); err == nil {
			t.Errorf("ParseTimestamp(%q) accepted", bad)
		}
	}
}

func TestOpIDOrder(t *testing.T) {
	older := OpID{Time: 5, Writer: "Z"}
	newer := OpID{Time: 6, Writer: "A"}
	if !newer.Newer(older) || older.Newer(newer) {
		t.Error("time must decide first")
	}
	tieA, tieB := OpID{Time: 5, Writer: "A"}, OpID{Time: 5, Writer: "B"}
	if !tieB.Newer(tieA) || tieA.Newer(tieB) || tieA.Newer(tieA) {
		t.Error("ties are broken by the larger writer id")
	}
	id, err := ParseOpID(tieB.String())
	if err != nil || id != tieB {
		t.Fatalf("round trip: %v %v", id, err)
	}
	for _, bad := range []string{"", "0000000000000005", "0000000000000005-", "000000000000000g-A", "00000000000000005A"} {
		if _, err := ParseOpID(bad); err == nil {
			t.Errorf("ParseOpID(%q) accepted", bad)
		}
	}
}

func TestEscapeID(t *testing.T) {
	cases := map[string]string{
		"c1":          "c1",
		"a/b":         "a%2Fb",
		"..":          "%2E%2E",
		"x y%":        "x%20y%25",
		"jeff@ex.com": "jeff%40ex%2Ecom",
		"ünï":         "%C3%BCn%C3%AF",
	}
	for in, want := range cases {
		got, err := EscapeID(in)
		if err != nil || got != want {
			t.Errorf("EscapeID(%q) = %q, %v; want %q", in, got, err, want)
		}
		back, err := UnescapeID(got)
		if err != nil || back != in {
			t.Errorf("UnescapeID(%q) = %q, %v", got, back, err)
		}
	}
	if _, err := EscapeID(""); err == nil {
		t.Error("empty id accepted")
	}
	if _, err := EscapeID(strings.Repeat("x", 513)); err == nil {
		t.Error("huge id accepted")
	}
	for _, bad := range []string{"%", "%4", "%zz"} {
		if _, err := UnescapeID(bad); err == nil {
			t.Errorf("UnescapeID(%q) accepted", bad)
		}
	}
}

func FuzzEscapeID(f *testing.F) {
	for _, s := range []string{"c1", "a/b", "..", "%", "ünï", "\x00/\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		e, err := EscapeID(id)
		if err != nil {
			return
		}
		if strings.ContainsAny(e, "/.") {
			t.Fatalf("escaped %q contains a separator: %q", id, e)
		}
		back, err := UnescapeID(e)
		if err != nil || back != id {
			t.Fatalf("round trip %q -> %q -> %q, %v", id, e, back, err)
		}
		key := writeKey("contacts", e, OpID{Time: 1, Writer: "w"})
		kp, err := parseOpKey(key.String())
		if err != nil || kp.EscapedID != e {
			t.Fatalf("key %s parses to %+v, %v", key, kp, err)
		}
	})
}

func FuzzDecodeWrite(f *testing.F) {
	good, _ := encodeWrite(&write{ID: OpID{Time: 1, Writer: "A"}, Ops: []Op{
		{ID: OpID{Time: 1, Writer: "A"}, Field: "f", Value: "x", Supersedes: []string{"f/0000000000000000-B"}},
		{ID: OpID{Time: 1, Writer: "A"}, Field: "g", Value: 2.5},
	}})
	del, _ := encodeWrite(&write{ID: OpID{Time: 1, Writer: "A"}, Ops: []Op{
		{ID: OpID{Time: 1, Writer: "A"}, Field: DeleteField, Value: true, Seen: []string{"f/0000000000000000-A"}},
	}})
	f.Add("/c/r/0000000000000001-A", good)
	f.Add("/c/r/0000000000000001-A", append(good, make([]byte, 64)...))
	f.Add("/c/r/0000000000000001-A", del)
	f.Add("/c/r/0000000000000001-A", []byte(`{"v":true,"t":"0000000000000001","w":"A"}`))
	f.Add("/c/r", []byte{2, 0, 1, 0x80})
	f.Add("/c/r/0000000000000001-A", copiedForm(&write{signed: good}))
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		kp, err := parseOpKey(key)
		if err != nil {
			return
		}
		w, err := decodeWrite(kp, data)
		if err != nil {
			return
		}
		for _, op := range w.Ops {
			if op.ID != kp.Op {
				t.Fatalf("decoded op %+v does not match key %+v", op, kp)
			}
		}
		again, err := encodeWrite(w)
		if err != nil {
			t.Fatal(err)
		}
		w2, err := decodeWrite(kp, again)
		if err != nil {
			t.Fatalf("re-encoded write does not decode: %v", err)
		}
		if !reflect.DeepEqual(w2.Ops, w.Ops) {
			t.Fatalf("round trip changed the write: %+v -> %+v", w.Ops, w2.Ops)
		}
	})
}

// TestCopiedForm: a write a move copied in an open network decodes as the
// same write, marked copied; the same bytes with a signature after them
// are refused (a copy is never signed), and so is a second flag.
func TestCopiedForm(t *testing.T) {
	id := OpID{Time: 5, Writer: "B"}
	plain, err := encodeWrite(&write{ID: id, Ops: []Op{{ID: id, Field: "title", Value: "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	kp, err := parseOpKey("/deals/d1/" + id.String())
	if err != nil {
		t.Fatal(err)
	}
	w, err := decodeWrite(kp, plain)
	if err != nil {
		t.Fatal(err)
	}
	cp := copiedForm(w)
	got, err := decodeWrite(kp, cp)
	if err != nil {
		t.Fatalf("copied form does not decode: %v", err)
	}
	if !got.Copied || got.Batch || got.Legacy || got.Voucher != "" || !reflect.DeepEqual(got.Ops, w.Ops) {
		t.Errorf("copied form decodes as %+v, want the write %+v marked copied", got, w)
	}
	if w.Copied {
		t.Error("the plain write decodes as copied")
	}
	if _, err := decodeWrite(kp, append(slices.Clone(cp), make([]byte, sigOverhead)...)); err == nil {
		t.Error("a copied write with a signature decodes")
	}
	both := slices.Clone(cp)
	both[1] |= flagBatch
	if _, err := decodeWrite(kp, both); err == nil {
		t.Error("a copied write also flagged batch decodes")
	}
}

// TestDeltaPriorityMatchesDecode: the priority read without decoding the
// delta is the one the full decode gives.
func TestDeltaPriorityMatchesDecode(t *testing.T) {
	for _, d := range []*pb.Delta{
		{Priority: 7},
		{Priority: 1 << 40, Elements: []*pb.Element{{Key: "/a/b/c/d", Value: []byte("v")}}, Tombstones: []*pb.Element{{Key: "/x", Id: "y"}}},
		{Elements: []*pb.Element{{Key: "/k"}}},
	} {
		data, err := proto.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		nd := merkledag.NodeWithData(data)
		got, err := deltaPriority(nd)
		if err != nil || got != d.GetPriority() {
			t.Errorf("priority %d, %v; want %d", got, err, d.GetPriority())
		}
		full, err := decodeDelta(nd)
		if err != nil || full.GetPriority() != got {
			t.Errorf("decode: %v %v", full, err)
		}
	}
	if _, err := deltaPriority(merkledag.NodeWithData([]byte{0xff})); err == nil {
		t.Error("a truncated delta read without error")
	}
}
