package main

// End-to-end tests of conflicts on real node processes: listing them
// (conflicts), ending them (resolve), the history of a record (history), a
// delete concurrent with an edit (record conflicts) and the office's
// conflict hook. Skipped with -short.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/node/apijson"
	"github.com/ferry-crm/ferry/node/datadir"
)

// policySchema decides contacts.phone by policy manual and the other fields
// of contacts (and a contact deleted while edited) by the default, newest;
// every field of tickets, and a ticket deleted while edited, by manual.
const policySchema = `collections:
  contacts:
    fields:
      first_name: {type: string}
      last_name:  {type: string, required: true}
      phone:      {type: string, policy: manual}
      stage:      {type: enum, values: [lead, qualified, won, lost]}
  tickets:
    policy: manual
    fields:
      title:  {type: string, required: true}
      status: {type: string}
`

// startPolicyCluster is startCluster with policySchema instead of the
// reference schema. hook, unless empty, is the office's conflict hook
// command: it is added to the office's config.yaml before its first start.
func startPolicyCluster(t *testing.T, hook string) *cluster {
	t.Helper()
	root := t.TempDir()
	schemaPath := filepath.Join(root, "policies.yaml")
	if err := os.WriteFile(schemaPath, []byte(policySchema), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	c := &cluster{}
	c.officeDir = initDir(t, root, "office", "--office", "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))
	if hook != "" {
		f, err := os.OpenFile(filepath.Join(c.officeDir, datadir.SettingsFile), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fmt.Fprintf(f, "conflict_hook:\n  command: [%q]\n  timeout: 5s\n", hook)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	c.office = startNode(t, c.officeDir)
	c.l1Dir = joinDir(t, root, "laptop1", c.officeDir, "--listen", "/ip4/127.0.0.1/tcp/0")
	c.l2Dir = joinDir(t, root, "laptop2", c.officeDir, "--listen", "/ip4/127.0.0.1/tcp/0")
	r := mustFerry(t, c.officeDir, "schema", "apply", schemaPath)
	if !strings.HasPrefix(r.Stdout, "schema applied: ") || !strings.Contains(r.Stdout, "contacts.phone") || !strings.Contains(r.Stdout, "tickets") {
		t.Fatalf("schema apply does not list what it applied:\n%s", r)
	}
	c.l1 = startNode(t, c.l1Dir)
	c.l2 = startNode(t, c.l2Dir)
	for _, d := range c.dirs() {
		waitPolicies(t, d)
	}
	return c
}

// waitPolicies waits until dir's node knows the policies of policySchema.
func waitPolicies(t testing.TB, dir string) {
	t.Helper()
	eventually(t, filepath.Base(dir)+" has the policy schema", func() (bool, string) {
		r := ferry(t, dir, "schema", "show", "--json")
		var sc struct {
			Collections map[string]struct {
				Policy string `json:"policy"`
				Fields map[string]struct {
					Policy string `json:"policy"`
				} `json:"fields"`
			} `json:"collections"`
		}
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &sc) != nil {
			return false, r.String()
		}
		return sc.Collections["contacts"].Fields["phone"].Policy == "manual" &&
			sc.Collections["tickets"].Policy == "manual" &&
			sc.Collections["tickets"].Fields["status"].Policy == "", r.String()
	})
}

// peerIDs maps the node names of c to their peer ids.
func peerIDs(t testing.TB, c *cluster) map[string]string {
	t.Helper()
	ids := map[string]string{}
	for _, d := range c.dirs() {
		ids[filepath.Base(d)] = mustStatus(t, d).PeerID
	}
	return ids
}

// setOnline runs `ferry online` (or `offline`) in dirs and waits until each
// node has a peer connection (or none).
func setOnline(t testing.TB, online bool, dirs ...string) {
	t.Helper()
	cmd := map[bool]string{true: "online", false: "offline"}[online]
	for _, d := range dirs {
		if r := mustFerry(t, d, cmd); r.Stdout != "node is "+cmd+"\n" {
			t.Errorf("%s printed %q", cmd, r.Stdout)
		}
	}
	for _, d := range dirs {
		eventually(t, filepath.Base(d)+" is "+cmd, func() (bool, string) {
			st, r := status(t, d)
			connected := st.ConnectedPeers >= 1
			return r.Code == 0 && st.Running && st.Online == online && connected == online, r.String()
		})
	}
}

// whileApart takes both laptops offline, runs writes and brings them back:
// what each laptop wrote meanwhile did not see what the other wrote.
func whileApart(t testing.TB, c *cluster, writes func()) {
	t.Helper()
	setOnline(t, false, c.l1Dir, c.l2Dir)
	writes()
	setOnline(t, true, c.l1Dir, c.l2Dir)
}

// conflictsJSON runs `ferry conflicts --json ARGS...`; ok is false when the
// command failed.
func conflictsJSON(t testing.TB, dir string, args ...string) (cs []apijson.Conflict, r result, ok bool) {
	t.Helper()
	r = ferry(t, dir, append([]string{"conflicts", "--json"}, args...)...)
	if r.Code != 0 {
		return nil, r, false
	}
	if err := json.Unmarshal([]byte(r.Stdout), &cs); err != nil {
		t.Fatalf("conflicts --json is not a list of conflicts: %v\n%s", err, r)
	}
	if cs == nil {
		t.Fatalf("conflicts --json printed null, want a list:\n%s", r)
	}
	return cs, r, true
}

// findConflict returns the conflict of collection/id/field in cs, or nil.
func findConflict(cs []apijson.Conflict, collection, id, field string) *apijson.Conflict {
	for i := range cs {
		if cs[i].Collection == collection && cs[i].ID == id && cs[i].Field == field {
			return &cs[i]
		}
	}
	return nil
}

// waitConflicts waits until `conflicts --json` on dir lists exactly the
// given conflicts ("collection/id/field"), each with two candidates whose
// writers are named (node names replicate like records), and returns them.
func waitConflicts(t testing.TB, dir string, want ...string) []apijson.Conflict {
	t.Helper()
	var got []apijson.Conflict
	eventually(t, fmt.Sprintf("%s lists the conflicts %v", filepath.Base(dir), want), func() (bool, string) {
		cs, r, ok := conflictsJSON(t, dir)
		if !ok || len(cs) != len(want) {
			return false, r.String()
		}
		for _, w := range want {
			parts := strings.SplitN(w, "/", 3)
			cf := findConflict(cs, parts[0], parts[1], parts[2])
			if cf == nil || len(cf.Candidates) != 2 {
				return false, r.String()
			}
			for _, cand := range cf.Candidates {
				if cand.WriterName == "" {
					return false, r.String()
				}
			}
		}
		got = cs
		return true, ""
	})
	return got
}

// waitNoConflicts waits until `conflicts --json` on dir prints [].
func waitNoConflicts(t testing.TB, dir string, args ...string) {
	t.Helper()
	eventually(t, filepath.Base(dir)+" has no conflicts", func() (bool, string) {
		r := ferry(t, dir, append([]string{"conflicts", "--json"}, args...)...)
		return r.Code == 0 && r.Stdout == "[]\n", r.String()
	})
}

// wantUsage asserts that `ferry --dir DIR ARGS...` is refused as a usage
// error (exit 2 with the usage hint).
func wantUsage(t testing.TB, dir string, args ...string) {
	t.Helper()
	if r := ferry(t, dir, args...); r.Code != 2 || !strings.Contains(r.Stderr, "Run 'ferry --help' for usage.") {
		t.Errorf("want exit 2 and a usage hint:\n%s", r)
	}
}

// wantFailure asserts that `ferry --dir DIR ARGS...` exits 1 and that its
// stderr mentions each of mention.
func wantFailure(t testing.TB, dir string, args []string, mention ...string) {
	t.Helper()
	r := ferry(t, dir, args...)
	if r.Code != 1 {
		t.Errorf("want exit 1:\n%s", r)
		return
	}
	for _, m := range mention {
		if !strings.Contains(r.Stderr, m) {
			t.Errorf("stderr does not mention %q:\n%s", m, r)
		}
	}
}

// checkCandidates asserts that cf has candidates numbered 1 and 2, one by
// each laptop with the value it wrote (writer id, name, op id, time).
func checkCandidates(t testing.TB, cf apijson.Conflict, ids map[string]string, byWriter map[string]any) {
	t.Helper()
	if len(cf.Candidates) != 2 {
		t.Fatalf("%s/%s %s: want 2 candidates: %+v", cf.Collection, cf.ID, cf.Field, cf)
	}
	seen := map[string]bool{}
	for i, cand := range cf.Candidates {
		if cand.N != i+1 {
			t.Errorf("candidate %d has n %d", i+1, cand.N)
		}
		want, known := byWriter[cand.WriterName]
		if !known || seen[cand.WriterName] {
			t.Errorf("candidate %d written by %q, want one candidate each by %v: %+v", cand.N, cand.WriterName, byWriter, cf)
			continue
		}
		seen[cand.WriterName] = true
		if cand.Writer != ids[cand.WriterName] {
			t.Errorf("candidate %d: writer %q, want %s's peer id %q", cand.N, cand.Writer, cand.WriterName, ids[cand.WriterName])
		}
		if !strings.HasSuffix(cand.Op, "-"+cand.Writer) || cand.At.IsZero() {
			t.Errorf("candidate %d: op %q at %v, want an op id of its writer and a time", cand.N, cand.Op, cand.At)
		}
		if !reflect.DeepEqual(cand.Value, want) {
			t.Errorf("candidate %d by %s has value %#v, want %#v", cand.N, cand.WriterName, cand.Value, want)
		}
	}
}

// sameConflicts asserts that every node lists the same conflicts.
func sameConflicts(t testing.TB, c *cluster, lists [][]apijson.Conflict) {
	t.Helper()
	for i := 1; i < len(lists); i++ {
		if !reflect.DeepEqual(lists[i], lists[0]) {
			t.Errorf("%s and %s list different conflicts:\n%+v\n%+v", filepath.Base(c.dirs()[0]), filepath.Base(c.dirs()[i]), lists[0], lists[i])
		}
	}
}

// historyJSON runs `ferry history ARGS... --json` and decodes it.
func historyJSON(t testing.TB, dir string, args ...string) []apijson.History {
	t.Helper()
	r := mustFerry(t, dir, append(append([]string{"history"}, args...), "--json")...)
	var h []apijson.History
	if err := json.Unmarshal([]byte(r.Stdout), &h); err != nil {
		t.Fatalf("history --json is not a list of operations: %v\n%s", err, r)
	}
	return h
}

// TestConflictManualResolve: both laptops edit a manual field while apart;
// the conflict is listed open on every node, shown by get, and ended by
// `resolve --pick` on one laptop, everywhere.
func TestConflictManualResolve(t *testing.T) {
	e2e(t)
	c := startPolicyCluster(t, "")
	ids := peerIDs(t, c)
	mustFerry(t, c.officeDir, "put", "contacts", "c1", "first_name=Ann", "last_name=Lee", "phone=+41-0")
	for _, d := range c.dirs() {
		waitRecord(t, d, "contacts", "c1", map[string]any{"phone": "+41-0"})
		waitNoConflicts(t, d)
	}

	whileApart(t, c, func() {
		mustFerry(t, c.l1Dir, "put", "contacts", "c1", "phone=+41-1")
		mustFerry(t, c.l2Dir, "put", "contacts", "c1", "phone=+41-2")
	})
	var lists [][]apijson.Conflict
	for _, d := range c.dirs() {
		lists = append(lists, waitConflicts(t, d, "contacts/c1/phone"))
	}
	sameConflicts(t, c, lists)
	cf := lists[0][0]
	if cf.Policy != "manual" || !cf.Open {
		t.Errorf("phone conflict: policy %q open %v, want manual and open", cf.Policy, cf.Open)
	}
	checkCandidates(t, cf, ids, map[string]any{"laptop1": "+41-1", "laptop2": "+41-2"})

	// get shows the conflict: the newest value, marked, with its candidates.
	rec, _, r, ok := getRecord(t, c.officeDir, "contacts", "c1")
	if !ok {
		t.Fatalf("get:\n%s", r)
	}
	if rec.Fields["phone"] != cf.Candidates[0].Value {
		t.Errorf("get shows phone %v, want candidate 1's %v", rec.Fields["phone"], cf.Candidates[0].Value)
	}
	if pc, has := rec.Conflicts["phone"]; !has || !pc.Open || pc.Policy != "manual" || !reflect.DeepEqual(pc.Candidates, cf.Candidates) {
		t.Errorf("get --json: conflicts.phone should be open with the listed candidates:\n%s", r)
	}
	if len(rec.Conflicts) != 1 {
		t.Errorf("get --json lists conflicts of fields nobody edited concurrently:\n%s", r)
	}
	r = mustFerry(t, c.officeDir, "get", "contacts", "c1")
	for _, s := range []string{"! phone", "conflict open (policy manual)", "+41-1", "+41-2", "laptop1", "laptop2", "  first_name"} {
		if !strings.Contains(r.Stdout, s) {
			t.Errorf("get (text) does not show %q:\n%s", s, r)
		}
	}
	if r := mustFerry(t, c.officeDir, "list", "contacts"); !strings.Contains(r.Stdout, "phone="+cf.Candidates[0].Value.(string)+"(!)") {
		t.Errorf("list (text) does not mark the conflicted phone:\n%s", r)
	}

	// conflicts: text, --open, per collection, bad arguments.
	for _, args := range [][]string{{"conflicts"}, {"conflicts", "--open"}, {"conflicts", "contacts", "--open"}} {
		r := mustFerry(t, c.l1Dir, args...)
		for _, s := range []string{"contacts/c1 field phone: conflict open (policy manual)", "*1", "+41-1", "+41-2"} {
			if !strings.Contains(r.Stdout, s) {
				t.Errorf("conflicts (text) does not show %q:\n%s", s, r)
			}
		}
	}
	if cs, r, ok := conflictsJSON(t, c.l1Dir, "--open"); !ok || !reflect.DeepEqual(cs, lists[1]) {
		t.Errorf("conflicts --open --json should list the open phone conflict:\n%s", r)
	}
	if r := mustFerry(t, c.officeDir, "conflicts", "tickets", "--json"); r.Stdout != "[]\n" {
		t.Errorf("conflicts of a collection without any:\n%s", r)
	}
	if r := mustFerry(t, c.officeDir, "conflicts", "tickets"); r.Stdout != "no conflicts\n" {
		t.Errorf("conflicts (text) of a collection without any:\n%s", r)
	}
	wantFailure(t, c.officeDir, []string{"conflicts", "nope"}, "nope")
	wantUsage(t, c.officeDir, "conflicts", "contacts", "tickets")

	// Bad resolve command lines change nothing.
	wantUsage(t, c.l2Dir, "resolve", "contacts", "c1", "phone")
	wantUsage(t, c.l2Dir, "resolve", "contacts", "c1", "phone", "--pick", "1", "--value", "+41-9")
	wantUsage(t, c.l2Dir, "resolve", "contacts", "c1", "phone", "--pick", "0")
	wantUsage(t, c.l2Dir, "resolve", "contacts", "c1", "phone", "--pick", "-1")
	wantUsage(t, c.l2Dir, "resolve", "contacts", "c1", "phone", "--pick", "two")
	wantUsage(t, c.l2Dir, "resolve", "contacts", "c1", "--pick", "1")
	wantFailure(t, c.l2Dir, []string{"resolve", "contacts", "c1", "phone", "--pick", "3"}, "phone", "2 candidates")
	wantFailure(t, c.l2Dir, []string{"resolve", "contacts", "c1", "first_name", "--pick", "1"}, "first_name", "no conflict")
	wantFailure(t, c.l2Dir, []string{"resolve", "contacts", "nope", "phone", "--pick", "1"}, "no conflict")
	wantFailure(t, c.l2Dir, []string{"resolve", "nope", "c1", "phone", "--pick", "1"}, "nope")
	if cs, r, ok := conflictsJSON(t, c.l2Dir); !ok || !reflect.DeepEqual(cs, lists[2]) {
		t.Errorf("refused resolves changed the conflicts:\n%s", r)
	}

	// resolve --pick 2 on laptop2 ends it everywhere.
	picked := lists[2][0].Candidates[1]
	r = mustFerry(t, c.l2Dir, "resolve", "contacts", "c1", "phone", "--pick", "2")
	if r.Stdout != "resolved contacts/c1 phone\n" {
		t.Errorf("resolve printed %q", r.Stdout)
	}
	for _, d := range c.dirs() {
		waitNoConflicts(t, d)
		rec := waitRecord(t, d, "contacts", "c1", map[string]any{"phone": picked.Value, "first_name": "Ann", "last_name": "Lee"})
		if rec.UpdatedBy != ids["laptop2"] {
			t.Errorf("%s: c1 updated by %q, want laptop2 (who resolved)", filepath.Base(d), rec.UpdatedBy)
		}
	}
	wantFailure(t, c.l2Dir, []string{"resolve", "contacts", "c1", "phone", "--pick", "2"}, "no conflict")
	wantFailure(t, c.officeDir, []string{"resolve", "contacts", "c1", "phone", "--value", "+41-9"}, "no conflict")

	// The resolution is an ordinary write that superseded both candidates.
	h := historyJSON(t, c.officeDir, "contacts", "c1", "phone")
	if len(h) != 4 {
		t.Fatalf("phone history on the office has %d operations, want 4 (put, two candidates, resolution): %+v", len(h), h)
	}
	last := h[3]
	if last.WriterName != "laptop2" || last.Value != picked.Value || !last.Visible || last.Origin != "peer" {
		t.Errorf("the resolution in the history: %+v", last)
	}
	for _, cand := range cf.Candidates {
		if !slices.Contains(last.Supersedes, "phone/"+cand.Op) {
			t.Errorf("the resolution supersedes %v, not candidate %s", last.Supersedes, cand.Op)
		}
	}
	for _, e := range h[:3] {
		if e.Visible {
			t.Errorf("an operation before the resolution is still visible: %+v", e)
		}
	}
	c.stop()
}

// TestConflictNewestResolveValue: a concurrent edit of a field with the
// default policy (newest) is a decided conflict: listed, not open, the
// newest shown; `resolve --value` ends it everywhere, and a value the field
// refuses is an error naming the field.
func TestConflictNewestResolveValue(t *testing.T) {
	e2e(t)
	c := startPolicyCluster(t, "")
	ids := peerIDs(t, c)
	mustFerry(t, c.l1Dir, "put", "contacts", "c1", "last_name=Stage", "stage=lead")
	for _, d := range c.dirs() {
		waitRecord(t, d, "contacts", "c1", map[string]any{"stage": "lead"})
	}
	whileApart(t, c, func() {
		mustFerry(t, c.l1Dir, "put", "contacts", "c1", "stage=qualified")
		mustFerry(t, c.l2Dir, "put", "contacts", "c1", "stage=lost")
	})
	var lists [][]apijson.Conflict
	for _, d := range c.dirs() {
		lists = append(lists, waitConflicts(t, d, "contacts/c1/stage"))
	}
	sameConflicts(t, c, lists)
	cf := lists[0][0]
	if cf.Policy != "newest" || cf.Open {
		t.Errorf("stage conflict: policy %q open %v, want newest, decided", cf.Policy, cf.Open)
	}
	checkCandidates(t, cf, ids, map[string]any{"laptop1": "qualified", "laptop2": "lost"})
	if cf.Candidates[0].At.Before(cf.Candidates[1].At) {
		t.Errorf("candidate 1 (shown) is older than candidate 2: %+v", cf.Candidates)
	}
	rec, _, r, _ := getRecord(t, c.officeDir, "contacts", "c1")
	if fc, has := rec.Conflicts["stage"]; rec.Fields["stage"] != cf.Candidates[0].Value || !has || fc.Open || fc.Policy != "newest" {
		t.Errorf("get --json should show the newest stage and a decided conflict:\n%s", r)
	}
	r = mustFerry(t, c.officeDir, "get", "contacts", "c1")
	if !strings.Contains(r.Stdout, "! stage") || !strings.Contains(r.Stdout, "conflict decided by policy newest") {
		t.Errorf("get (text) does not show the decided conflict:\n%s", r)
	}
	if r := mustFerry(t, c.officeDir, "conflicts"); !strings.Contains(r.Stdout, "contacts/c1 field stage: conflict decided by policy newest") {
		t.Errorf("conflicts (text):\n%s", r)
	}
	for _, d := range c.dirs() {
		if r := mustFerry(t, d, "conflicts", "--open", "--json"); r.Stdout != "[]\n" {
			t.Errorf("conflicts --open lists a decided conflict:\n%s", r)
		}
		if r := mustFerry(t, d, "conflicts", "--open"); r.Stdout != "no conflicts\n" {
			t.Errorf("conflicts --open (text) lists a decided conflict:\n%s", r)
		}
	}

	wantFailure(t, c.l1Dir, []string{"resolve", "contacts", "c1", "stage", "--value", "maybe"}, "stage", "maybe")
	if cs, r, ok := conflictsJSON(t, c.l1Dir); !ok || !reflect.DeepEqual(cs, lists[1]) {
		t.Errorf("a refused resolve changed the conflicts:\n%s", r)
	}
	r = mustFerry(t, c.l1Dir, "resolve", "contacts", "c1", "stage", "--value", "won")
	if r.Stdout != "resolved contacts/c1 stage\n" {
		t.Errorf("resolve printed %q", r.Stdout)
	}
	for _, d := range c.dirs() {
		waitNoConflicts(t, d)
		if rec := waitRecord(t, d, "contacts", "c1", map[string]any{"stage": "won", "last_name": "Stage"}); rec.UpdatedBy != ids["laptop1"] {
			t.Errorf("%s: c1 updated by %q, want laptop1 (who resolved)", filepath.Base(d), rec.UpdatedBy)
		}
	}
	c.stop()
}

// TestHistory: a field edited in turn on the office and both laptops; the
// history lists every operation oldest first, who wrote it, where, and what
// it superseded.
func TestHistory(t *testing.T) {
	e2e(t)
	c := startPolicyCluster(t, "")
	ids := peerIDs(t, c)
	mustFerry(t, c.officeDir, "put", "contacts", "c1", "last_name=Hist", "phone=100")
	waitRecord(t, c.l1Dir, "contacts", "c1", map[string]any{"phone": "100"})
	mustFerry(t, c.l1Dir, "put", "contacts", "c1", "phone=200")
	waitRecord(t, c.l2Dir, "contacts", "c1", map[string]any{"phone": "200"})
	mustFerry(t, c.l2Dir, "put", "contacts", "c1", "phone=300")
	for _, d := range []string{c.officeDir, c.l1Dir} {
		waitRecord(t, d, "contacts", "c1", map[string]any{"phone": "300", "last_name": "Hist"})
	}

	writers := []string{"office", "laptop1", "laptop2"}
	values := []any{"100", "200", "300"}
	for _, d := range []string{c.officeDir, c.l1Dir} {
		here := filepath.Base(d)
		h := historyJSON(t, d, "contacts", "c1", "phone")
		if len(h) != 3 {
			t.Fatalf("%s: phone history has %d operations, want 3: %+v", here, len(h), h)
		}
		for i, e := range h {
			wantOrigin := "peer"
			if writers[i] == here {
				wantOrigin = "here"
			}
			if e.Field != "phone" || e.Value != values[i] || e.WriterName != writers[i] || e.Writer != ids[writers[i]] ||
				e.Origin != wantOrigin || e.Visible != (i == 2) || e.Deleted || e.At.IsZero() || e.Block == "" ||
				!strings.HasSuffix(e.Op, "-"+e.Writer) {
				t.Errorf("%s: operation %d of the phone history: %+v; want value %v by %s, origin %s, visible %v",
					here, i+1, e, values[i], writers[i], wantOrigin, i == 2)
			}
			if i == 0 {
				if len(e.Supersedes) != 0 {
					t.Errorf("%s: the first phone operation supersedes %v", here, e.Supersedes)
				}
				continue
			}
			// The second write of the phone left the first write visible (its
			// last name is live); the third retires the second and carries on
			// its supersede fact, so it lists the first too.
			want := []string{"phone/" + h[i-1].Op}
			if i == 2 {
				want = append(want, "phone/"+h[0].Op)
			}
			if !reflect.DeepEqual(e.Supersedes, want) {
				t.Errorf("%s: operation %d supersedes %v, want %v", here, i+1, e.Supersedes, want)
			}
			if e.At.Before(h[i-1].At) {
				t.Errorf("%s: history is not oldest first: %v before %v", here, h[i-1].At, e.At)
			}
		}
	}

	// Without a field: every field's operations, oldest first.
	all := historyJSON(t, c.l2Dir, "contacts", "c1")
	var fields []string
	for _, e := range all {
		fields = append(fields, e.Field)
	}
	sort.Strings(fields)
	if !reflect.DeepEqual(fields, []string{"last_name", "phone", "phone", "phone"}) {
		t.Errorf("history of the whole record lists fields %v: %+v", fields, all)
	}
	for i := 1; i < len(all); i++ {
		if all[i].At.Before(all[i-1].At) {
			t.Errorf("history of the whole record is not oldest first: %+v", all)
		}
	}

	// The text form: a header, then one line per operation.
	r := mustFerry(t, c.l2Dir, "history", "contacts", "c1", "phone")
	lines := strings.Split(strings.TrimSuffix(r.Stdout, "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(strings.Join(strings.Fields(lines[0]), " "), "TIME FIELD VALUE WRITER ORIGIN STATE") {
		t.Fatalf("history (text): want a header and 3 lines:\n%s", r)
	}
	for i, line := range lines[1:] {
		state, origin := "superseded", "peer"
		if i == 2 {
			state, origin = "visible", "here"
		}
		for _, s := range []string{" phone ", " " + values[i].(string) + " ", writers[i] + " (", " " + origin + " ", " " + state + " "} {
			if !strings.Contains(line, s) {
				t.Errorf("history (text) line %d does not show %q:\n%s", i+1, s, r)
			}
		}
	}

	wantFailure(t, c.officeDir, []string{"history", "contacts", "nope"}, "contacts/nope", "not found")
	wantFailure(t, c.officeDir, []string{"history", "nope", "c1"}, "nope")
	wantUsage(t, c.officeDir, "history", "contacts")
	wantUsage(t, c.officeDir, "history", "contacts", "c1", "phone", "extra")
	c.stop()
}

// TestRecordConflict: a laptop deletes records while the other edits them.
// For contacts (policy newest) the conflict is decided, for tickets (manual)
// it is open; picking the delete deletes the record everywhere, picking the
// edit keeps it with all its fields.
func TestRecordConflict(t *testing.T) {
	e2e(t)
	c := startPolicyCluster(t, "")
	ids := peerIDs(t, c)
	mustFerry(t, c.officeDir, "put", "contacts", "c2", "first_name=Del", "last_name=Race")
	mustFerry(t, c.officeDir, "put", "tickets", "t1", "title=Printer", "status=new")
	for _, d := range c.dirs() {
		waitRecord(t, d, "contacts", "c2", map[string]any{"first_name": "Del", "last_name": "Race"})
		waitRecord(t, d, "tickets", "t1", map[string]any{"title": "Printer", "status": "new"})
	}
	whileApart(t, c, func() {
		mustFerry(t, c.l1Dir, "delete", "contacts", "c2")
		mustFerry(t, c.l1Dir, "delete", "tickets", "t1")
		mustFerry(t, c.l2Dir, "put", "contacts", "c2", "first_name=Edited")
		mustFerry(t, c.l2Dir, "put", "tickets", "t1", "status=fixed")
	})
	var lists [][]apijson.Conflict
	for _, d := range c.dirs() {
		lists = append(lists, waitConflicts(t, d, "contacts/c2/_record", "tickets/t1/_record"))
	}
	sameConflicts(t, c, lists)

	// pickOf returns the number of the delete (or the edit) candidate.
	pickOf := func(cf *apijson.Conflict, deleted bool) int {
		for _, cand := range cf.Candidates {
			if cand.Deleted == deleted {
				return cand.N
			}
		}
		t.Fatalf("%s/%s: no candidate with deleted %v: %+v", cf.Collection, cf.ID, deleted, cf)
		return 0
	}
	for _, tc := range []struct {
		coll, id, policy, field string
		value                   any
		open                    bool
	}{
		{"contacts", "c2", "newest", "first_name", "Edited", false},
		{"tickets", "t1", "manual", "status", "fixed", true},
	} {
		cf := findConflict(lists[0], tc.coll, tc.id, "_record")
		if cf.Policy != tc.policy || cf.Open != tc.open {
			t.Errorf("%s/%s record conflict: policy %q open %v, want %s, open %v", tc.coll, tc.id, cf.Policy, cf.Open, tc.policy, tc.open)
		}
		del, edit := cf.Candidates[pickOf(cf, true)-1], cf.Candidates[pickOf(cf, false)-1]
		if del.WriterName != "laptop1" || del.Writer != ids["laptop1"] || del.Value != nil || del.Field != "" {
			t.Errorf("%s/%s: the delete candidate: %+v", tc.coll, tc.id, del)
		}
		if edit.WriterName != "laptop2" || edit.Writer != ids["laptop2"] || edit.Field != tc.field || edit.Value != tc.value {
			t.Errorf("%s/%s: the edit candidate: %+v, want %s = %v by laptop2", tc.coll, tc.id, edit, tc.field, tc.value)
		}
		// The record is shown when the candidate shown (the first) is the edit.
		rec, _, r, ok := getRecord(t, c.officeDir, tc.coll, tc.id)
		if cf.Candidates[0].Deleted {
			if ok || !strings.Contains(r.Stderr, "not found") {
				t.Errorf("%s/%s: the delete shows, but get found the record:\n%s", tc.coll, tc.id, r)
			}
			continue
		}
		if rc, has := rec.Conflicts["_record"]; !ok || rec.Fields[tc.field] != tc.value || !has || rc.Open != tc.open || rc.Policy != tc.policy {
			t.Errorf("%s/%s: the edit shows; get --json should show it and the record conflict:\n%s", tc.coll, tc.id, r)
		}
		if r := mustFerry(t, c.officeDir, "get", tc.coll, tc.id); !strings.Contains(r.Stdout, "! (record)") || !strings.Contains(r.Stdout, "(deleted the record)") {
			t.Errorf("get (text) does not show the record conflict:\n%s", r)
		}
	}
	r := mustFerry(t, c.officeDir, "conflicts")
	for _, s := range []string{
		"contacts/c2 record (deleted and edited concurrently): conflict decided by policy newest",
		"tickets/t1 record (deleted and edited concurrently): conflict open (policy manual)",
		"(deleted the record)", "(edited first_name = Edited)", "(edited status = fixed)",
	} {
		if !strings.Contains(r.Stdout, s) {
			t.Errorf("conflicts (text) does not show %q:\n%s", s, r)
		}
	}
	if cs, r, ok := conflictsJSON(t, c.officeDir, "--open"); !ok || len(cs) != 1 || cs[0].Collection != "tickets" {
		t.Errorf("conflicts --open should list the ticket only:\n%s", r)
	}

	// A record conflict is resolved with --pick. (Today the message is
	// `contacts/c2: unknown field "_record"`, not the store's "resolved with
	// --pick": the node parses --value by the field's type first.)
	wantFailure(t, c.l2Dir, []string{"resolve", "contacts", "c2", "_record", "--value", "x"}, "_record")
	// Picking the delete deletes the contact everywhere.
	r = mustFerry(t, c.l2Dir, "resolve", "contacts", "c2", "_record", "--pick", fmt.Sprint(pickOf(findConflict(lists[2], "contacts", "c2", "_record"), true)))
	if r.Stdout != "resolved contacts/c2 _record\n" {
		t.Errorf("resolve printed %q", r.Stdout)
	}
	// Picking the edit keeps the ticket, with every field, everywhere.
	mustFerry(t, c.officeDir, "resolve", "tickets", "t1", "_record", "--pick", fmt.Sprint(pickOf(findConflict(lists[0], "tickets", "t1", "_record"), false)))
	for _, d := range c.dirs() {
		waitGone(t, d, "contacts", "c2")
		waitRecord(t, d, "tickets", "t1", map[string]any{"title": "Printer", "status": "fixed"})
		waitNoConflicts(t, d)
	}
	wantFailure(t, c.l1Dir, []string{"resolve", "contacts", "c2", "_record", "--pick", "1"}, "no conflict")

	// The history of the deleted contact ends with laptop2's delete, which
	// superseded laptop1's.
	h := historyJSON(t, c.officeDir, "contacts", "c2")
	var dels []apijson.History
	for _, e := range h {
		if e.Deleted {
			dels = append(dels, e)
			if e.Field != "_record" || e.Value != nil {
				t.Errorf("a delete in the history: %+v", e)
			}
		}
	}
	if len(dels) != 2 || dels[0].WriterName != "laptop1" || dels[0].Visible || dels[1].WriterName != "laptop2" || !dels[1].Visible {
		t.Errorf("history of c2 should list laptop1's delete, superseded, then laptop2's, visible: %+v", h)
	}
	if r := mustFerry(t, c.officeDir, "history", "contacts", "c2"); !strings.Contains(r.Stdout, "(deleted the record)") {
		t.Errorf("history (text) does not show the delete:\n%s", r)
	}
	c.stop()
}

// writeHook writes an executable hook script into dir; it saves every
// conflict it is offered as dir/offered-<pid>.json.
func writeHook(t testing.TB, dir, answer string) string {
	t.Helper()
	path := filepath.Join(dir, "hook.sh")
	script := fmt.Sprintf("#!/bin/sh\ncat > '%s'/offered-$$.json\n%s\n", dir, answer)
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}

// hookOffers returns the requests the hook of writeHook saved in dir.
func hookOffers(t testing.TB, dir string) []node.HookRequest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "offered-*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out []node.HookRequest
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var req node.HookRequest
		if err := json.Unmarshal(data, &req); err != nil {
			t.Fatalf("the hook was given %s, not a conflict: %v\n%s", f, err, data)
		}
		out = append(out, req)
	}
	return out
}

// TestConflictHookPicks: the office's hook answers {"pick": 2} to every
// open conflict; a manual conflict disappears everywhere with nobody
// running resolve, and a decided one is not offered.
func TestConflictHookPicks(t *testing.T) {
	e2e(t)
	hookDir := t.TempDir()
	c := startPolicyCluster(t, writeHook(t, hookDir, `printf '{"pick": 2}\n'`))
	ids := peerIDs(t, c)
	mustFerry(t, c.l1Dir, "put", "contacts", "c1", "last_name=Hook", "phone=+41-0", "stage=lead")
	for _, d := range c.dirs() {
		waitRecord(t, d, "contacts", "c1", map[string]any{"phone": "+41-0"})
	}
	whileApart(t, c, func() {
		mustFerry(t, c.l1Dir, "put", "contacts", "c1", "phone=+41-1", "stage=qualified")
		mustFerry(t, c.l2Dir, "put", "contacts", "c1", "phone=+41-2", "stage=lost")
	})

	// The office's resolution is the newest write of c1 everywhere, and
	// only the decided stage conflict is left.
	var want any
	for _, d := range c.dirs() {
		eventually(t, filepath.Base(d)+" shows the hook's resolution", func() (bool, string) {
			rec, _, r, ok := getRecord(t, d, "contacts", "c1")
			if !ok || rec.UpdatedBy != ids["office"] {
				return false, r.String()
			}
			if want == nil {
				offers := hookOffers(t, hookDir)
				if len(offers) != 1 {
					t.Fatalf("the office resolved c1 after offering the hook %d conflicts: %+v", len(offers), offers)
				}
				want = offers[0].Conflict.Candidates[1].Value
			}
			_, phoneConflict := rec.Conflicts["phone"]
			stage, stageConflict := rec.Conflicts["stage"]
			return rec.Fields["phone"] == want && !phoneConflict && stageConflict && !stage.Open, r.String()
		})
		cs, r, _ := conflictsJSON(t, d)
		if len(cs) != 1 || cs[0].Field != "stage" || cs[0].Open {
			t.Errorf("%s: after the hook only the decided stage conflict should be left:\n%s", filepath.Base(d), r)
		}
	}

	// What the hook was given: the open phone conflict, and the record.
	offers := hookOffers(t, hookDir)
	if len(offers) != 1 {
		t.Fatalf("the hook was offered %d conflicts, want the phone conflict only: %+v", len(offers), offers)
	}
	cf := offers[0].Conflict
	if cf.Collection != "contacts" || cf.ID != "c1" || cf.Field != "phone" || cf.Policy != "manual" || !cf.Open {
		t.Errorf("the hook was offered %+v, want the open phone conflict of contacts/c1", cf)
	}
	checkCandidates(t, cf, ids, map[string]any{"laptop1": "+41-1", "laptop2": "+41-2"})
	if rec := offers[0].Record; rec["last_name"] != "Hook" || rec["phone"] != cf.Candidates[0].Value {
		t.Errorf("the hook was given the record %v", rec)
	}
	h := historyJSON(t, c.l2Dir, "contacts", "c1", "phone")
	if last := h[len(h)-1]; last.WriterName != "office" || !last.Visible || len(last.Supersedes) != 2 {
		t.Errorf("the hook's resolution in laptop2's history: %+v", last)
	}
	c.stop()
}

// TestConflictHookFails: a hook that exits 1 leaves the conflict open, and
// a person can still resolve it.
func TestConflictHookFails(t *testing.T) {
	e2e(t)
	hookDir := t.TempDir()
	c := startPolicyCluster(t, writeHook(t, hookDir, "echo 'CRM unreachable' >&2\nexit 1"))
	mustFerry(t, c.l1Dir, "put", "contacts", "c1", "last_name=Hook", "phone=+41-0")
	for _, d := range c.dirs() {
		waitRecord(t, d, "contacts", "c1", map[string]any{"phone": "+41-0"})
	}
	whileApart(t, c, func() {
		mustFerry(t, c.l1Dir, "put", "contacts", "c1", "phone=+41-1")
		mustFerry(t, c.l2Dir, "put", "contacts", "c1", "phone=+41-2")
	})

	var logLine string
	eventually(t, "the office logs the failed hook", func() (bool, string) {
		stderr := c.office.stderr.String()
		for _, line := range strings.Split(stderr, "\n") {
			if strings.Contains(line, "conflict hook failed") {
				logLine = line
				return true, ""
			}
		}
		return false, stderr
	})
	for _, s := range []string{"collection=contacts", "id=c1", "field=phone", "CRM unreachable", "exit status 1"} {
		if !strings.Contains(logLine, s) {
			t.Errorf("the office's log of the failed hook does not mention %q:\n%s", s, logLine)
		}
	}
	if offers := hookOffers(t, hookDir); len(offers) != 1 || offers[0].Conflict.Field != "phone" {
		t.Errorf("the hook was offered %+v, want the phone conflict once", offers)
	}
	// The hook is not asked again: the conflict stays open, everywhere.
	for _, d := range c.dirs() {
		cs := waitConflicts(t, d, "contacts/c1/phone")
		if !cs[0].Open {
			t.Errorf("%s: the conflict is no longer open after the hook failed: %+v", filepath.Base(d), cs[0])
		}
	}
	if cs, r, ok := conflictsJSON(t, c.officeDir, "--open"); !ok || len(cs) != 1 || cs[0].Field != "phone" || !cs[0].Open {
		t.Errorf("conflicts --open on the office after the hook failed:\n%s", r)
	}

	mustFerry(t, c.officeDir, "resolve", "contacts", "c1", "phone", "--value", "+41-3")
	for _, d := range c.dirs() {
		waitNoConflicts(t, d)
		waitRecord(t, d, "contacts", "c1", map[string]any{"phone": "+41-3"})
	}
	c.stop()
}
