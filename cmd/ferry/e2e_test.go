package main

// End-to-end tests of the real ferry binary: every node is a `ferry node`
// process on loopback and every command a `ferry` process, as a user runs
// them. Skipped with -short.

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/node/apijson"
)

// TestQuickStart follows the quick start by hand: an office and two laptops,
// the schema applied on the office, a contact written on one laptop and read
// on the other.
func TestQuickStart(t *testing.T) {
	e2e(t)
	c := startCluster(t)

	r := mustFerry(t, c.l1Dir, "put", "contacts", "c1", "first_name=Jeff", "last_name=Smith", "email=jeff@example.com")
	if got, want := r.Stdout, "created contacts/c1 (email, first_name, last_name)\n"; got != want {
		t.Errorf("put printed %q, want %q", got, want)
	}
	jeff := map[string]any{"first_name": "Jeff", "last_name": "Smith", "email": "jeff@example.com"}
	rec := waitRecord(t, c.l2Dir, "contacts", "c1", jeff)
	if len(rec.Fields) != 3 {
		t.Errorf("laptop2 shows fields %v, want exactly %v", rec.Fields, jeff)
	}
	l1ID := mustStatus(t, c.l1Dir).PeerID
	if rec.UpdatedBy != l1ID || rec.UpdatedAt.IsZero() {
		t.Errorf("laptop2 shows updated_by %q at %v, want laptop1 %q at a time", rec.UpdatedBy, rec.UpdatedAt, l1ID)
	}

	// The text form names the record and its values.
	r = mustFerry(t, c.l2Dir, "get", "contacts", "c1")
	for _, s := range []string{"contacts/c1", "first_name", "Jeff", "last_name", "Smith", "jeff@example.com"} {
		if !strings.Contains(r.Stdout, s) {
			t.Errorf("get (text) does not show %q:\n%s", s, r)
		}
	}

	// list --json on the office: one JSON object per line.
	eventually(t, "office lists c1", func() (bool, string) {
		r := ferry(t, c.officeDir, "list", "contacts", "--json")
		if r.Code != 0 {
			return false, r.String()
		}
		lines := strings.Split(strings.TrimSuffix(r.Stdout, "\n"), "\n")
		if len(lines) != 1 {
			return false, r.String()
		}
		var got apijson.Record
		if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
			t.Fatalf("list --json line is not a record: %v\n%s", err, r)
		}
		return got.Collection == "contacts" && got.ID == "c1" && reflect.DeepEqual(got.Fields, jeff), r.String()
	})

	// status --json: roles and connections.
	for _, d := range c.dirs() {
		wantRole := "laptop"
		if d == c.officeDir {
			wantRole = "office"
		}
		eventually(t, filepath.Base(d)+" status shows a connected "+wantRole, func() (bool, string) {
			st, r := status(t, d)
			return r.Code == 0 && st.Running && st.Online && st.Role == wantRole && st.ConnectedPeers >= 1 &&
				st.Name == filepath.Base(d) && len(st.ListenAddrs) > 0 && !st.Dirty, r.String()
		})
	}

	// peers --json on laptop1: the office, connected, configured, named.
	officeID := mustStatus(t, c.officeDir).PeerID
	eventually(t, "laptop1 lists the office as a connected peer", func() (bool, string) {
		r := ferry(t, c.l1Dir, "peers", "--json")
		var peers []apijson.PeerInfo
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &peers) != nil {
			return false, r.String()
		}
		for _, p := range peers {
			if p.ID == officeID {
				return p.Connected && p.Configured && p.Name == "office" && p.Role == "office", r.String()
			}
		}
		return false, r.String()
	})

	c.stop()
}

// TestOfflineFieldMerge takes both laptops offline, edits one field of the
// same contact on each, brings them back and checks every node converges on
// both edits, without a conflict.
func TestOfflineFieldMerge(t *testing.T) {
	e2e(t)
	c := startCluster(t)
	mustFerry(t, c.l1Dir, "put", "contacts", "c1", "first_name=Jeff", "last_name=Smith", "email=jeff@example.com")
	for _, d := range c.dirs() {
		waitRecord(t, d, "contacts", "c1", map[string]any{"first_name": "Jeff", "last_name": "Smith"})
	}

	laptops := []string{c.l1Dir, c.l2Dir}
	for _, d := range laptops {
		r := mustFerry(t, d, "offline")
		if r.Stdout != "node is offline\n" {
			t.Errorf("offline printed %q", r.Stdout)
		}
	}
	for _, d := range laptops {
		eventually(t, filepath.Base(d)+" is offline with no connection", func() (bool, string) {
			st, r := status(t, d)
			return r.Code == 0 && st.Running && !st.Online && st.ConnectedPeers == 0, r.String()
		})
	}

	mustFerry(t, c.l1Dir, "put", "contacts", "c1", "first_name=John")
	mustFerry(t, c.l2Dir, "put", "contacts", "c1", "last_name=Rodman")
	// Offline means offline: nobody else has seen either edit.
	if rec, _, r, ok := getRecord(t, c.l2Dir, "contacts", "c1"); !ok || rec.Fields["first_name"] != "Jeff" || rec.Fields["last_name"] != "Rodman" {
		t.Errorf("offline laptop2 should show Jeff Rodman:\n%s", r)
	}
	if rec, _, r, ok := getRecord(t, c.officeDir, "contacts", "c1"); !ok || rec.Fields["first_name"] != "Jeff" || rec.Fields["last_name"] != "Smith" {
		t.Errorf("office should still show Jeff Smith while the laptops are offline:\n%s", r)
	}

	for _, d := range laptops {
		r := mustFerry(t, d, "online")
		if r.Stdout != "node is online\n" {
			t.Errorf("online printed %q", r.Stdout)
		}
	}
	want := map[string]any{"first_name": "John", "last_name": "Rodman", "email": "jeff@example.com"}
	for _, d := range c.dirs() {
		waitRecord(t, d, "contacts", "c1", want) // fails on a "conflicts" key
	}
	for _, d := range laptops {
		eventually(t, filepath.Base(d)+" is back online", func() (bool, string) {
			st, r := status(t, d)
			return r.Code == 0 && st.Online && st.ConnectedPeers >= 1, r.String()
		})
	}
	c.stop()
}

// TestValidationErrors checks that bad writes exit 1, name what is wrong and
// write nothing, and that bad command lines exit 2; with no node running
// (the CLI opens the store itself) and through a running node.
func TestValidationErrors(t *testing.T) {
	e2e(t)
	dir := initDir(t, t.TempDir(), "laptop", "--listen", "/ip4/127.0.0.1/tcp/0")
	mustFerry(t, dir, "schema", "apply", schemaFile)
	mustFerry(t, dir, "put", "contacts", "e1", "first_name=Eve", "last_name=Early", "email=eve@example.com")

	type badWrite struct {
		name    string
		args    []string
		mention []string // stderr must contain each
	}
	bad := []badWrite{
		{"unknown collection", []string{"put", "nope", "x1", "last_name=A"}, []string{"unknown collection", `"nope"`}},
		{"unknown field", []string{"put", "contacts", "x2", "last_name=A", "bogus=1"}, []string{"contacts/x2", `unknown field "bogus"`}},
		{"bad enum", []string{"put", "contacts", "x3", "last_name=A", "stage=maybe"}, []string{"contacts/x3", `"stage"`, "maybe"}},
		{"bad number", []string{"put", "contacts", "x4", "last_name=A", "amount=abc"}, []string{"contacts/x4", `"amount"`, "abc"}},
		{"bad bool", []string{"put", "contacts", "x5", "last_name=A", "active=perhaps"}, []string{"contacts/x5", `"active"`}},
		{"bad time", []string{"put", "contacts", "x6", "last_name=A", "met_on=yesterday"}, []string{"contacts/x6", `"met_on"`}},
		{"missing required", []string{"put", "contacts", "x7", "first_name=A"}, []string{"contacts/x7", `"last_name"`, "required"}},
		{"duplicate unique", []string{"put", "contacts", "x8", "last_name=A", "email=eve@example.com"}, []string{"contacts/x8", `"email"`, "e1"}},
		// One bad field fails the whole put: e1 keeps its first name.
		{"bad field in update", []string{"put", "contacts", "e1", "first_name=Changed", "stage=maybe"}, []string{"contacts/e1", `"stage"`}},
		{"unset required", []string{"put", "contacts", "e1", "--unset", "last_name"}, []string{"contacts/e1", `"last_name"`}},
	}
	usage := [][]string{
		{"put", "contacts"},
		{"put", "contacts", "x9"},
		{"frobnicate"},
		{"get", "contacts", "e1", "--bogus"},
		{"put", "contacts", "x9", "noequals"},
		{"put", "contacts", "x9", "=value"},
		{"put", "contacts", "x9", "last_name=A", "last_name=B"},
		{"get", "contacts"},
		{"list"},
		{"node", "--log-level", "loud"},
	}

	check := func(t *testing.T) {
		before := mustStatus(t, dir)
		for _, b := range bad {
			r := ferry(t, dir, b.args...)
			if r.Code != 1 {
				t.Errorf("%s: want exit 1:\n%s", b.name, r)
			}
			for _, m := range b.mention {
				if !strings.Contains(r.Stderr, m) {
					t.Errorf("%s: stderr does not mention %s:\n%s", b.name, m, r)
				}
			}
			if r.Stdout != "" {
				t.Errorf("%s: failed put printed on stdout:\n%s", b.name, r)
			}
		}
		for _, args := range usage {
			r := ferry(t, dir, args...)
			if r.Code != 2 || !strings.Contains(r.Stderr, "Run 'ferry --help' for usage.") {
				t.Errorf("want exit 2 and a usage hint:\n%s", r)
			}
		}
		for _, id := range []string{"x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9"} {
			r := ferry(t, dir, "get", "contacts", id)
			if r.Code != 1 || !strings.Contains(r.Stderr, "contacts/"+id+": record not found") {
				t.Errorf("a failed write created contacts/%s:\n%s", id, r)
			}
		}
		if rec, _, r, ok := getRecord(t, dir, "contacts", "e1"); !ok || rec.Fields["first_name"] != "Eve" || rec.Fields["last_name"] != "Early" || rec.Fields["stage"] != nil {
			t.Errorf("a failed update changed contacts/e1:\n%s", r)
		}
		after := mustStatus(t, dir)
		if after.DAGHeight != before.DAGHeight || !reflect.DeepEqual(after.Heads, before.Heads) {
			t.Errorf("failed writes moved the DAG: height %d -> %d, heads %v -> %v", before.DAGHeight, after.DAGHeight, before.Heads, after.Heads)
		}
	}
	t.Run("no node", func(t *testing.T) {
		if st := mustStatus(t, dir); st.Running {
			t.Fatalf("status says a node runs in %s", dir)
		}
		check(t)
	})
	t.Run("node running", func(t *testing.T) {
		n := startNode(t, dir)
		check(t)
		n.stop()
	})
}

// genContacts writes n deterministic contacts with the fields of crm.yaml,
// in the style of bench/gen_records.py, and returns them by id.
func genContacts(n int, seed uint64) (jsonl string, byID map[string]map[string]any) {
	first := strings.Fields("Jeff Anna Lena Omar Yuki Carlos Priya Noah Mia Ivan Sara Tom Aisha Ben Chen Lea Zoë")
	last := strings.Fields("Smith Rodman Meier Okafor Tanaka Garcia Patel Keller Rossi Novak Berg Dubois Haddad Kim Silva Weber")
	stages := []string{"lead", "qualified", "won", "lost"}
	rng := rand.New(rand.NewPCG(seed, 42))
	var b strings.Builder
	byID = map[string]map[string]any{}
	for i := range n {
		f, l := first[rng.IntN(len(first))], last[rng.IntN(len(last))]
		rec := map[string]any{
			"id":         fmt.Sprintf("c%d", i),
			"first_name": f,
			"last_name":  l,
			"email":      fmt.Sprintf("%s.%s.%d@example.com", strings.ToLower(f), strings.ToLower(l), i),
			"phone":      fmt.Sprintf("+41 44 %03d %02d %02d", rng.IntN(1000), rng.IntN(100), rng.IntN(100)),
			"stage":      stages[rng.IntN(len(stages))],
			"amount":     float64(10000+rng.IntN(25000000)) / 100,
			"active":     rng.IntN(5) != 0,
			"met_on":     fmt.Sprintf("202%d-%02d-%02dT09:00:00Z", rng.IntN(6), 1+rng.IntN(12), 1+rng.IntN(28)),
		}
		line, err := json.Marshal(rec)
		if err != nil {
			panic(err)
		}
		b.Write(line)
		b.WriteByte('\n')
		// What export gives back: JSON numbers decode as float64.
		var back map[string]any
		if err := json.Unmarshal(line, &back); err != nil {
			panic(err)
		}
		byID[rec["id"].(string)] = back
	}
	return b.String(), byID
}

// TestImportExport imports 500 contacts and exports them back, checks that a
// bad line fails the import with its line number and writes nothing, and
// imports from stdin; all with no node running.
func TestImportExport(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	dir := initDir(t, root, "laptop", "--listen", "/ip4/127.0.0.1/tcp/0")
	mustFerry(t, dir, "schema", "apply", schemaFile)

	const n = 500
	jsonl, want := genContacts(n, 1)
	file := filepath.Join(root, "contacts.jsonl")
	if err := os.WriteFile(file, []byte(jsonl), 0o600); err != nil {
		t.Fatal(err)
	}
	r := mustFerry(t, dir, "import", "contacts", file)
	if !strings.HasPrefix(r.Stdout, "imported 500 records into contacts: 500 written") {
		t.Errorf("import printed:\n%s", r)
	}
	if st := mustStatus(t, dir); st.Running || st.DAGHeight == 0 {
		t.Errorf("after an import with no node: running %v, DAG height %d", st.Running, st.DAGHeight)
	}

	got, lines := exportRecords(t, dir, "contacts")
	if lines != n || len(got) != n {
		t.Fatalf("export gave %d lines, %d ids; want %d", lines, len(got), n)
	}
	ids := func(m map[string]map[string]any) []string {
		var out []string
		for id := range m {
			out = append(out, id)
		}
		sort.Strings(out)
		return out
	}
	if !reflect.DeepEqual(ids(got), ids(want)) {
		t.Fatalf("exported ids differ from the imported ones")
	}
	mismatches := 0
	for id, w := range want {
		if !reflect.DeepEqual(got[id], w) && mismatches < 5 {
			mismatches++
			t.Errorf("%s does not round-trip:\n got  %v\n want %v", id, got[id], w)
		}
	}
	// A few records through get, field by field.
	for _, id := range []string{"c0", "c1", "c250", "c499"} {
		rec, _, r, ok := getRecord(t, dir, "contacts", id)
		if !ok {
			t.Fatalf("get after import:\n%s", r)
		}
		for k, v := range want[id] {
			if k != "id" && rec.Fields[k] != v {
				t.Errorf("%s.%s = %v (%T), imported %v (%T)", id, k, rec.Fields[k], rec.Fields[k], v, v)
			}
		}
		if len(rec.Fields) != len(want[id])-1 {
			t.Errorf("%s has fields %v, imported %v", id, rec.Fields, want[id])
		}
	}

	// Importing the same file again changes nothing.
	before := mustStatus(t, dir)
	r = mustFerry(t, dir, "import", "-q", "contacts", file)
	if !strings.HasPrefix(r.Stdout, "imported 500 records into contacts: 0 written, 500 unchanged, in 0 deltas") || r.Stderr != "" {
		t.Errorf("re-import (quiet):\n%s", r)
	}
	if after := mustStatus(t, dir); after.DAGHeight != before.DAGHeight {
		t.Errorf("a re-import of unchanged records moved the DAG from %d to %d", before.DAGHeight, after.DAGHeight)
	}

	// A bad line 3: exit 1, the line is named, nothing is written.
	badFile := filepath.Join(root, "bad.jsonl")
	bad := `{"id":"b1","last_name":"Bad","first_name":"One"}
{"id":"b2","last_name":"Bad","first_name":"Two"}
{"id":"b3","last_name":"Bad","amount":"12"}
{"id":"b4","last_name":"Bad"}
`
	if err := os.WriteFile(badFile, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	r = ferry(t, dir, "import", "contacts", badFile)
	if r.Code != 1 || !strings.Contains(r.Stderr, "line 3") || !strings.Contains(r.Stderr, "amount") {
		t.Errorf("import of a bad line 3: want exit 1 naming line 3 and the field:\n%s", r)
	}
	for _, id := range []string{"b1", "b2", "b3", "b4"} {
		if r := ferry(t, dir, "get", "contacts", id); r.Code != 1 {
			t.Errorf("a failed import wrote contacts/%s:\n%s", id, r)
		}
	}
	if after := mustStatus(t, dir); after.DAGHeight != before.DAGHeight {
		t.Errorf("a failed import moved the DAG from %d to %d", before.DAGHeight, after.DAGHeight)
	}
	// Not JSON at all, and a missing file.
	if err := os.WriteFile(badFile, []byte("{\"id\":\"b1\",\"last_name\":\"x\"}\nnot json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := ferry(t, dir, "import", "contacts", badFile); r.Code != 1 || !strings.Contains(r.Stderr, "line 2") {
		t.Errorf("import of a non-JSON line 2:\n%s", r)
	}
	if r := ferry(t, dir, "import", "contacts", filepath.Join(root, "missing.jsonl")); r.Code != 1 {
		t.Errorf("import of a missing file:\n%s", r)
	}
	if _, lines := exportRecords(t, dir, "contacts"); lines != n {
		t.Errorf("after failed imports export has %d records, want %d", lines, n)
	}

	// From stdin.
	stdin := `{"id":"s1","last_name":"Stdin","first_name":"Sam","amount":12.5,"active":false}` + "\n\n" +
		`{"id":"s2","last_name":"Stdin","stage":"won"}` + "\n"
	r = runFerry(t, strings.NewReader(stdin), "--dir", dir, "import", "contacts", "-")
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, "imported 2 records into contacts: 2 written") {
		t.Fatalf("import from stdin:\n%s", r)
	}
	rec, _, r, ok := getRecord(t, dir, "contacts", "s1")
	if !ok || !reflect.DeepEqual(rec.Fields, map[string]any{"last_name": "Stdin", "first_name": "Sam", "amount": 12.5, "active": false}) {
		t.Errorf("s1 imported from stdin:\n%s", r)
	}
	if got, lines := exportRecords(t, dir, "contacts"); lines != n+2 || got["s2"]["stage"] != "won" {
		t.Errorf("export after the stdin import: %d lines, s2 = %v", lines, got["s2"])
	}
}

// TestNoNodeRunning writes and reads with no node running: the CLI opens the
// store itself, and a node started later serves what it wrote.
func TestNoNodeRunning(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	missing := filepath.Join(root, "missing")
	if r := ferry(t, missing, "status"); r.Code != 1 || !strings.Contains(r.Stderr, "not a Ferry data dir") || !strings.Contains(r.Stderr, "init") {
		t.Errorf("status of a dir never initialised: want exit 1 and a hint to init:\n%s", r)
	}
	if r := ferry(t, missing, "init", "--peer", "/ip4/127.0.0.1/tcp/1"); r.Code != 2 || !strings.Contains(r.Stderr, "/p2p/") {
		t.Errorf("init with a peer address lacking /p2p/<id>: want exit 2:\n%s", r)
	}
	if _, err := os.Stat(filepath.Join(missing, "config.yaml")); err == nil {
		t.Errorf("a refused init wrote a config")
	}
	dir := initDir(t, root, "solo", "--listen", "/ip4/127.0.0.1/tcp/0")
	if r := ferry(t, dir, "init"); r.Code != 1 || !strings.Contains(r.Stderr, "already initialised") {
		t.Errorf("second init of a dir: want exit 1:\n%s", r)
	}
	st := mustStatus(t, dir)
	if st.Running || st.Online || st.Role != "laptop" || st.DAGHeight != 0 || st.Name != "solo" {
		t.Errorf("status of a fresh dir with no node: %+v", st)
	}
	if r := ferry(t, dir, "put", "contacts", "c1", "last_name=Smith"); r.Code != 1 || !strings.Contains(r.Stderr, "unknown collection") {
		t.Errorf("put before any schema:\n%s", r)
	}
	r := mustFerry(t, dir, "schema", "apply", schemaFile)
	if !strings.HasPrefix(r.Stdout, "schema applied") {
		t.Errorf("schema apply:\n%s", r)
	}
	if r := mustFerry(t, dir, "schema", "apply", schemaFile); r.Stdout != "schema unchanged\n" {
		t.Errorf("second schema apply:\n%s", r)
	}
	r = mustFerry(t, dir, "put", "contacts", "c1", "first_name=Jeff", "last_name=Smith", "amount=12.5", "active=true", "stage=won", "met_on=2024-03-01")
	if !strings.HasPrefix(r.Stdout, "created contacts/c1") {
		t.Errorf("put:\n%s", r)
	}
	r = mustFerry(t, dir, "put", "contacts", "c1", "first_name=Jeff")
	if r.Stdout != "contacts/c1 unchanged\n" {
		t.Errorf("put of an unchanged value:\n%s", r)
	}
	r = mustFerry(t, dir, "put", "contacts", "c1", "--unset", "stage", "first_name=Jo")
	if !strings.HasPrefix(r.Stdout, "updated contacts/c1") {
		t.Errorf("put --unset:\n%s", r)
	}
	rec, _, r, ok := getRecord(t, dir, "contacts", "c1")
	if !ok || rec.Fields["first_name"] != "Jo" || rec.Fields["amount"] != 12.5 || rec.Fields["active"] != true {
		t.Fatalf("get with no node:\n%s", r)
	}
	if _, has := rec.Fields["stage"]; has {
		t.Errorf("stage was unset but get shows it:\n%s", r)
	}
	if mt, _ := rec.Fields["met_on"].(string); !strings.HasPrefix(mt, "2024-03-01") {
		t.Errorf("met_on = %v, want 2024-03-01...", rec.Fields["met_on"])
	}
	if st := mustStatus(t, dir); st.Running || st.DAGHeight == 0 {
		t.Errorf("status after writes with no node: %+v", st)
	}

	n := startNode(t, dir)
	waitRecord(t, dir, "contacts", "c1", map[string]any{"first_name": "Jo", "last_name": "Smith"})
	n.stop()
}

// TestKill9Durability kills a node right after an acknowledged put, with no
// clean shutdown: the write survives, the node repairs, and the write
// reaches a peer afterwards.
func TestKill9Durability(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	port := freePort(t)
	aDir := initDir(t, root, "office", "--office", "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))
	a := startNode(t, aDir)
	bDir := joinDir(t, root, "laptop", aDir, "--listen", "/ip4/127.0.0.1/tcp/0")

	mustFerry(t, aDir, "schema", "apply", schemaFile)
	mustFerry(t, aDir, "put", "contacts", "k1", "first_name=Kim", "last_name=Killed")
	a.kill()
	if a.err == nil {
		t.Fatalf("node exited 0 after SIGKILL?")
	}

	a = startNode(t, aDir)
	waitRecord(t, aDir, "contacts", "k1", map[string]any{"first_name": "Kim", "last_name": "Killed"})
	if !strings.Contains(a.stderr.String(), "not closed cleanly") {
		t.Errorf("the restarted node does not report the unclean shutdown; stderr:\n%s", a.stderr.String())
	}
	eventually(t, "restarted node is repaired (dirty false)", func() (bool, string) {
		st, r := status(t, aDir)
		return r.Code == 0 && st.Running && !st.Dirty && st.QueuedJobs == 0, r.String()
	})

	// The laptop was down the whole time: it can only get k1 from the
	// restarted node.
	b := startNode(t, bDir)
	waitRecord(t, bDir, "contacts", "k1", map[string]any{"first_name": "Kim", "last_name": "Killed"})

	// Again, and this time read with no node running (a stale api.sock and
	// the unclean marker are left behind), then restart.
	mustFerry(t, aDir, "put", "contacts", "k2", "first_name=Kai", "last_name=Killed")
	a.kill()
	if rec, _, r, ok := getRecord(t, aDir, "contacts", "k2"); !ok || rec.Fields["first_name"] != "Kai" {
		t.Errorf("get with no node after SIGKILL:\n%s", r)
	}
	a = startNode(t, aDir)
	waitRecord(t, aDir, "contacts", "k2", map[string]any{"first_name": "Kai"})
	eventually(t, "node restarted after a second SIGKILL is clean", func() (bool, string) {
		st, r := status(t, aDir)
		return r.Code == 0 && st.Running && !st.Dirty && st.QueuedJobs == 0, r.String()
	})
	waitRecord(t, bDir, "contacts", "k2", map[string]any{"first_name": "Kai"})
	b.stop()
	a.stop()
}

// TestRestartKeepsData stops a node with SIGTERM and starts it again: the
// data and the offline setting are kept, and the shutdown was clean.
func TestRestartKeepsData(t *testing.T) {
	e2e(t)
	dir := initDir(t, t.TempDir(), "laptop", "--listen", "/ip4/127.0.0.1/tcp/0")
	n := startNode(t, dir)
	mustFerry(t, dir, "schema", "apply", schemaFile)
	mustFerry(t, dir, "put", "contacts", "r1", "first_name=Rita", "last_name=Restart", "amount=42")
	mustFerry(t, dir, "put", "contacts", "r2", "last_name=Two")
	mustFerry(t, dir, "delete", "contacts", "r2")
	mustFerry(t, dir, "offline")
	before := mustStatus(t, dir)
	n.stop()

	// Between runs the store is readable by the CLI.
	st := mustStatus(t, dir)
	if st.Running || st.DAGHeight != before.DAGHeight || !reflect.DeepEqual(st.Heads, before.Heads) || st.Dirty {
		t.Errorf("status with the node stopped: %+v; while running: %+v", st, before)
	}

	n = startNode(t, dir)
	if strings.Contains(n.stderr.String(), "not closed cleanly") {
		t.Errorf("the node reports an unclean shutdown after SIGTERM:\n%s", n.stderr.String())
	}
	waitRecord(t, dir, "contacts", "r1", map[string]any{"first_name": "Rita", "last_name": "Restart", "amount": 42.0})
	if r := ferry(t, dir, "get", "contacts", "r2"); r.Code != 1 {
		t.Errorf("deleted r2 is back after a restart:\n%s", r)
	}
	st = mustStatus(t, dir)
	if !st.Running || st.Online || st.DAGHeight != before.DAGHeight || st.Dirty {
		t.Errorf("status after restart (offline is kept across restarts): %+v", st)
	}
	mustFerry(t, dir, "online")
	if st := mustStatus(t, dir); !st.Online {
		t.Errorf("online did not take: %+v", st)
	}
	n.stop()
}

// TestEscapedIDs round-trips record ids that need escaping in the API's
// URLs through put, get, list, export and delete, via a running node.
func TestEscapedIDs(t *testing.T) {
	e2e(t)
	dir := initDir(t, t.TempDir(), "laptop", "--listen", "/ip4/127.0.0.1/tcp/0")
	mustFerry(t, dir, "schema", "apply", schemaFile)
	n := startNode(t, dir)

	ids := []string{"we/ird id.x", "ünïcode", "a/../b", "100%", "q?x=1#frag", `back\slash`, "日本語 ID", "plus+sign", "./x"}
	want := map[string]map[string]any{}
	for i, id := range ids {
		last := fmt.Sprintf("Last %d = ü", i)
		r := mustFerry(t, dir, "put", "contacts", id, "last_name="+last, "first_name=a=b")
		if r.Stdout != fmt.Sprintf("created contacts/%s (first_name, last_name)\n", id) {
			t.Errorf("put %q printed %q", id, r.Stdout)
		}
		want[id] = map[string]any{"id": id, "last_name": last, "first_name": "a=b"}
	}
	for _, id := range ids {
		rec, _, r, ok := getRecord(t, dir, "contacts", id)
		if !ok || rec.ID != id || rec.Collection != "contacts" || rec.Fields["last_name"] != want[id]["last_name"] || rec.Fields["first_name"] != "a=b" {
			t.Errorf("get %q:\n%s", id, r)
		}
	}
	r := mustFerry(t, dir, "list", "contacts", "--json")
	listed, lines := decodeLines(t, r.Stdout, r)
	if lines != len(ids) {
		t.Errorf("list --json has %d lines, want %d:\n%s", lines, len(ids), r)
	}
	for _, id := range ids {
		if listed[id]["collection"] != "contacts" {
			t.Errorf("list --json lacks %q:\n%s", id, r)
		}
	}
	r = mustFerry(t, dir, "list", "contacts")
	for _, id := range ids {
		if !strings.Contains(r.Stdout, id+"  ") {
			t.Errorf("list (text) lacks %q:\n%s", id, r)
		}
	}
	exported, _ := exportRecords(t, dir, "contacts")
	if !reflect.DeepEqual(exported, want) {
		t.Errorf("export:\n got  %v\n want %v", exported, want)
	}
	// The export imports back unchanged.
	if r := runFerry(t, strings.NewReader(mustFerry(t, dir, "export", "contacts").Stdout), "--dir", dir, "import", "-q", "contacts", "-"); r.Code != 0 ||
		!strings.Contains(r.Stdout, fmt.Sprintf("%d unchanged", len(ids))) {
		t.Errorf("re-import of the export:\n%s", r)
	}
	// Deleting one escaped id deletes that record only.
	mustFerry(t, dir, "delete", "contacts", "we/ird id.x")
	if r := ferry(t, dir, "get", "contacts", "we/ird id.x"); r.Code != 1 {
		t.Errorf("get after delete:\n%s", r)
	}
	for _, id := range []string{"we", "ird id.x", "b"} {
		if r := ferry(t, dir, "get", "contacts", id); r.Code != 1 {
			t.Errorf("get of %q, a piece of an escaped id, found something:\n%s", id, r)
		}
	}
	if _, lines := exportRecords(t, dir, "contacts"); lines != len(ids)-1 {
		t.Errorf("after one delete export has %d records, want %d", lines, len(ids)-1)
	}
	n.stop()
}

// TestDotIDs: the record ids "." and ".." are valid ids (import accepts them)
// but the CLI's URLs let net/http clean them away.
func TestDotIDs(t *testing.T) {
	e2e(t)

	dir := initDir(t, t.TempDir(), "laptop", "--listen", "/ip4/127.0.0.1/tcp/0")
	mustFerry(t, dir, "schema", "apply", schemaFile)
	mustFerry(t, dir, "put", "contacts", "other", "last_name=Other")
	for _, id := range []string{".", ".."} {
		r := ferry(t, dir, "get", "contacts", id, "--json")
		if r.Code != 1 {
			// Today `get contacts .` follows a redirect to the list and
			// prints the first record of the collection as if it were ".".
			t.Errorf("get of the missing record %q must exit 1:\n%s", id, r)
		}
		r = ferry(t, dir, "put", "contacts", id, "last_name=Dot")
		if r.Code != 0 {
			t.Errorf("put of id %q:\n%s", id, r)
			continue
		}
		if rec, _, r, ok := getRecord(t, dir, "contacts", id); !ok || rec.ID != id {
			t.Errorf("get of id %q:\n%s", id, r)
		}
		mustFerry(t, dir, "delete", "contacts", id)
	}
}

// TestDelete deletes a record on one laptop and checks it is gone on every
// node, and that deleting it again fails.
func TestDelete(t *testing.T) {
	e2e(t)
	c := startCluster(t)
	mustFerry(t, c.l1Dir, "put", "contacts", "c1", "first_name=Del", "last_name=Me")
	mustFerry(t, c.l1Dir, "put", "contacts", "keep", "last_name=Kept")
	for _, d := range c.dirs() {
		waitRecord(t, d, "contacts", "c1", map[string]any{"first_name": "Del", "last_name": "Me"})
		waitRecord(t, d, "contacts", "keep", map[string]any{"last_name": "Kept"})
	}
	r := mustFerry(t, c.l2Dir, "delete", "contacts", "c1")
	if r.Stdout != "deleted contacts/c1\n" {
		t.Errorf("delete printed %q", r.Stdout)
	}
	for _, d := range c.dirs() {
		waitGone(t, d, "contacts", "c1")
		if r := ferry(t, d, "list", "contacts"); r.Code != 0 || strings.Contains(r.Stdout, "c1 ") || !strings.Contains(r.Stdout, "keep ") {
			t.Errorf("%s lists c1 after the delete, or lost keep:\n%s", filepath.Base(d), r)
		}
	}
	for _, d := range c.dirs() {
		r := ferry(t, d, "delete", "contacts", "c1")
		if r.Code != 1 || !strings.Contains(r.Stderr, "not found") {
			t.Errorf("deleting c1 again on %s: want exit 1, not found:\n%s", filepath.Base(d), r)
		}
	}
	// The id can be written again after a delete.
	mustFerry(t, c.officeDir, "put", "contacts", "c1", "last_name=Again")
	waitRecord(t, c.l1Dir, "contacts", "c1", map[string]any{"last_name": "Again"})
	rec, _, r, _ := getRecord(t, c.l1Dir, "contacts", "c1")
	if _, has := rec.Fields["first_name"]; has {
		t.Errorf("a re-created record shows a field of the deleted one:\n%s", r)
	}
	c.stop()
}

// TestNodeStartDuringCLI starts a node while CLI commands run against the
// same data dir, as a user does who types `ferry status` right after
// starting the node: the node must start anyway.
func TestNodeStartDuringCLI(t *testing.T) {
	e2e(t)

	dir := initDir(t, t.TempDir(), "laptop", "--listen", "/ip4/127.0.0.1/tcp/0")
	for i := range 10 {
		n := spawnNode(t, dir)
		eventually(t, "node answers while status is polled from its first moment", func() (bool, string) {
			if n.exited() {
				t.Fatalf("attempt %d: the node died while starting (%v):\n%s", i, n.err, n.stderr.String())
			}
			st, r := status(t, dir)
			return r.Code == 0 && st.Running, r.String()
		})
		n.stop()
	}
}
