package main

// End-to-end tests of a full disk (issue 10): a write that fails for lack
// of space is not written, and nothing of it surfaces later; once there is
// room again the node repairs itself, `ferry check` finds the store whole
// and a new node syncs everything. And `ferry check --repair` mends a data
// dir that the last release (a8af1f4) broke on a full disk.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node/api"
	"github.com/ferry-crm/ferry/node/datadir"
	"github.com/ferry-crm/ferry/node/disk"
)

// syncWithin bounds `sync --wait --timeout 60s` (runFerry's cliTimeout is
// shorter than the sync's own timeout).
const syncWithin = 90 * time.Second

// TestDiskFullRecipe is the recipe on a real, small filesystem: an
// import runs out of space part-way, a put on the full disk fails and is
// not written, the disk grows, the same put succeeds, the node repairs
// itself, `ferry check` finds the store whole, and a laptop enrolled
// afterwards receives every record. It needs root (to mount a tmpfs).
func TestDiskFullRecipe(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	mnt := filepath.Join(root, "mnt")
	mountTmpfs(t, mnt, "60m")

	port := freePort(t)
	officeDir := initDir(t, mnt, "office", "--office", "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))
	// No reserve: the writes themselves must meet ENOSPC (the reserve
	// would refuse them before).
	appendConfig(t, officeDir, "disk_reserve: \"0\"\n")
	office := startNode(t, officeDir)
	mustFerry(t, officeDir, "schema", "apply", schemaFile)
	mustFerry(t, officeDir, "put", "contacts", "before1", "last_name=Before")

	const n = 200000 // store format 2 keeps 20,000 contacts in a few MB
	jsonl, _ := genContacts(n, 10)
	file := filepath.Join(root, "contacts.jsonl") // not on the small disk
	if err := os.WriteFile(file, []byte(jsonl), 0o600); err != nil {
		t.Fatal(err)
	}
	r := ferry(t, officeDir, "import", "-q", "contacts", file)
	if r.Code != 1 || !strings.Contains(r.Stderr, "no space left on device") {
		t.Fatalf("import of %d contacts onto a 60 MB filesystem: want exit 1 with \"no space left on device\":\n%s", n, r)
	}
	t.Logf("import on the full disk: %s", strings.TrimSpace(r.Stderr))
	// The message says how many records were written: as many as show.
	m := regexp.MustCompile(`import stopped after (\d+) of `).FindStringSubmatch(r.Stderr)
	if m == nil {
		t.Fatalf("the failed import does not say how far it got:\n%s", r)
	}
	_, shown := exportRecords(t, officeDir, "contacts")
	if said, _ := strconv.Atoi(m[1]); said != shown-1 {
		t.Errorf("the import says it stopped after %d records, and %d of them show (before1 aside)", said, shown-1)
	}

	// The import's partial write was cut from badger's log, which gave a
	// little room back: fill it, as other programs on a full disk do.
	// The value takes more than a page: a write into the log's last,
	// partly used page needs no new space even on a full disk.
	fillDisk(t, mnt)
	r = ferry(t, officeDir, "put", "contacts", "during1", "last_name="+during)
	if r.Code != 1 || !strings.Contains(r.Stderr, "not written") {
		t.Fatalf("put on the full disk: want exit 1 saying \"not written\":\n%s", r)
	}
	if r := ferry(t, officeDir, "get", "contacts", "during1"); r.Code != 1 || !strings.Contains(r.Stderr, "not found") {
		t.Fatalf("get of the put that was not written: want exit 1 \"not found\":\n%s", r)
	}

	remountTmpfs(t, mnt, "600m")
	mustFerry(t, officeDir, "put", "contacts", "during1", "last_name="+during)
	mustFerry(t, officeDir, "put", "contacts", "after1", "last_name=After")
	waitClean(t, officeDir)
	mustCheckWhole(t, officeDir)

	office.stop()
	startNode(t, officeDir)
	mustCheckWhole(t, officeDir)

	laptopDir := joinDir(t, root, "laptop", officeDir, "--listen", "/ip4/127.0.0.1/tcp/0")
	startNode(t, laptopDir)
	syncWait(t, laptopDir)
	want, wantN := exportRecords(t, officeDir, "contacts")
	got, gotN := exportRecords(t, laptopDir, "contacts")
	t.Logf("the office holds %d contacts after the import that ran out of space", wantN)
	if gotN != wantN {
		t.Errorf("the laptop lists %d contacts, the office %d", gotN, wantN)
	}
	for _, id := range []string{"before1", "during1", "after1"} {
		if _, ok := want[id]; !ok {
			t.Errorf("the office lacks contacts/%s", id)
		}
		if _, ok := got[id]; !ok {
			t.Errorf("the laptop lacks contacts/%s", id)
		}
	}
	for _, d := range []string{officeDir, laptopDir} {
		waitRecord(t, d, "contacts", "before1", map[string]any{"last_name": "Before"})
		waitRecord(t, d, "contacts", "during1", map[string]any{"last_name": during})
		waitRecord(t, d, "contacts", "after1", map[string]any{"last_name": "After"})
	}
	for id, rec := range want {
		if g := got[id]; fmt.Sprint(g) != fmt.Sprint(rec) {
			t.Errorf("contacts/%s: the laptop shows %v, the office %v", id, g, rec)
			break
		}
	}
	if wantN >= n+3 || wantN <= 3 {
		t.Errorf("the office holds %d contacts: the import did not stop part-way (tune the filesystem size)", wantN)
	}
	mustCheckWhole(t, laptopDir)
}

// TestDiskFullEnvFault is the same without a mount: the office runs with
// FERRY_FAULT_DISK_FULL, so every write to its store fails while a file
// exists. A local put then fails and is not written; a laptop's edit made
// meanwhile cannot be merged on the office. Once the file is gone, the same
// put succeeds, the office repairs itself and merges the laptop's edit, the
// laptop receives the put, and both stores are whole.
func TestDiskFullEnvFault(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	full := filepath.Join(root, "disk-full")
	port := freePort(t)
	officeDir := initDir(t, root, "office", "--office", "--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))
	startNode(t, officeDir, disk.FaultFullEnv+"="+full)
	mustFerry(t, officeDir, "schema", "apply", schemaFile)
	laptopDir := joinDir(t, root, "laptop", officeDir, "--listen", "/ip4/127.0.0.1/tcp/0")
	startNode(t, laptopDir)
	waitSchema(t, laptopDir)
	mustFerry(t, officeDir, "put", "contacts", "before1", "last_name=Before")
	waitRecord(t, laptopDir, "contacts", "before1", map[string]any{"last_name": "Before"})

	if err := os.WriteFile(full, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := ferry(t, officeDir, "put", "contacts", "during1", "last_name=During")
	if r.Code != 1 || !strings.Contains(r.Stderr, "not written") {
		t.Fatalf("put while the store's writes fail: want exit 1 saying \"not written\":\n%s", r)
	}
	if r := ferry(t, officeDir, "get", "contacts", "during1"); r.Code != 1 || !strings.Contains(r.Stderr, "not found") {
		t.Fatalf("get of the put that was not written: want exit 1 \"not found\":\n%s", r)
	}
	// An edit on the laptop reaches the office, which cannot merge it.
	mustFerry(t, laptopDir, "put", "contacts", "laptop1", "last_name=Laptop")
	eventually(t, "the office fails to merge the laptop's edit (status: failed_writes > 0)", func() (bool, string) {
		st, r := status(t, officeDir)
		return r.Code == 0 && st.Dirty && st.FailedWrites > 0, r.String()
	})
	if r := ferry(t, officeDir, "get", "contacts", "laptop1"); r.Code != 1 || !strings.Contains(r.Stderr, "not found") {
		t.Fatalf("the office shows the laptop's edit it could not write:\n%s", r)
	}
	if r := ferry(t, laptopDir, "get", "contacts", "during1"); r.Code != 1 || !strings.Contains(r.Stderr, "not found") {
		t.Fatalf("the laptop got the put that was not written:\n%s", r)
	}

	if err := os.Remove(full); err != nil {
		t.Fatal(err)
	}
	mustFerry(t, officeDir, "put", "contacts", "during1", "last_name=During")
	waitRecord(t, laptopDir, "contacts", "during1", map[string]any{"last_name": "During"})
	waitRecord(t, officeDir, "contacts", "laptop1", map[string]any{"last_name": "Laptop"})
	waitClean(t, officeDir)
	syncWait(t, laptopDir)
	mustCheckWhole(t, officeDir)
	mustCheckWhole(t, laptopDir)
	_, officeN := exportRecords(t, officeDir, "contacts")
	_, laptopN := exportRecords(t, laptopDir, "contacts")
	if officeN != 3 || laptopN != 3 {
		t.Errorf("contacts: office %d, laptop %d; want 3 on both (before1, during1, laptop1)", officeN, laptopN)
	}
}

// TestCheckRepairsStoreBrokenByOldRelease opens an office data dir the
// release a8af1f4 left broken on a full disk, made by hand on a
// 4 MB tmpfs (testdata/broken-office.tar.gz; see the steps below): its only
// head names a block that cannot be read (badger v1.6.2 answers with
// another key's value for what it wrote after a short write to its value
// log: check counts it missing), a block merged here is out of reach of
// the heads, and so no value is carried by a block a peer could get;
// contacts/during1 shows although its put failed. Before store format 2,
// check found all three and --repair mended them; now the migration to
// format 2 rewrites what shows into new blocks, the store is whole, and a
// laptop enrolled afterwards converges to every record the office shows.
//
// The fixture: `ferry init --office`, node, schema apply demo_schema.yaml,
// put contacts before1, import 3000 contacts (stopped by ENOSPC after 550),
// put contacts during1 (failed: ENOSPC), remount the tmpfs at 64 MB, put
// contacts after1 (succeeded), SIGTERM the node.
func TestCheckRepairsStoreBrokenByOldRelease(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	unpackFixture(t, filepath.Join("testdata", "broken-office.tar.gz"), root)
	officeDir := filepath.Join(root, "office")
	fc, err := datadir.ReadSettings(officeDir)
	if err != nil {
		t.Fatal(err)
	}
	fc.Listen = []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t))}
	if err := fc.Write(officeDir); err != nil {
		t.Fatal(err)
	}
	// What the old release shows: the three writes and the 550 imported
	// contacts (during1 too, although its put failed).
	_, shown := exportRecords(t, officeDir, "contacts")
	if shown != 553 {
		t.Errorf("the fixture shows %d contacts, want 553", shown)
	}

	// That release wrote store format 1: the first command that opened the
	// store (the export above) migrated it to format 2, writing every op
	// that shows again in new blocks. What could not be read (history in
	// the lost block) is gone; what showed is all carried by blocks that
	// the heads lead to: the store is whole without a repair.
	mustCheckWhole(t, officeDir)
	want, wantN := exportRecords(t, officeDir, "contacts")
	if wantN != shown {
		t.Errorf("after the migration the office shows %d contacts, %d before", wantN, shown)
	}

	startNode(t, officeDir)
	mustCheckWhole(t, officeDir)
	laptopDir := joinDir(t, root, "laptop", officeDir, "--listen", "/ip4/127.0.0.1/tcp/0")
	startNode(t, laptopDir)
	syncWait(t, laptopDir)
	got, gotN := exportRecords(t, laptopDir, "contacts")
	if gotN != wantN {
		t.Errorf("the laptop lists %d contacts, the office %d", gotN, wantN)
	}
	for id := range want {
		if _, ok := got[id]; !ok {
			t.Errorf("the laptop lacks contacts/%s", id)
		}
	}
	mustCheckWhole(t, laptopDir)
}

// TestCheckUsage: a bad query is refused by the API (400, nothing done), a
// bad flag is a usage error, and a fresh store is whole.
func TestCheckUsage(t *testing.T) {
	e2e(t)
	root := t.TempDir()
	dir := initDir(t, root, "solo", "--listen", "/ip4/127.0.0.1/tcp/0")
	if r := ferry(t, dir, "check", "--repiar"); r.Code != exitUsage {
		t.Errorf("check with an unknown flag: want exit %d:\n%s", exitUsage, r)
	}
	if r := ferry(t, dir, "check", "extra"); r.Code != exitUsage {
		t.Errorf("check with an argument: want exit %d:\n%s", exitUsage, r)
	}
	mustCheckWhole(t, dir)
	startNode(t, dir)
	c, err := api.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"?repair=yes please", "?repair=2", "?repair=1&repair=0", "?fix=1"} {
		err := c.Do(context.Background(), "POST", "/v1/check"+strings.ReplaceAll(q, " ", "%20"), nil, nil)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status != 400 || !strings.Contains(ae.Msg, "check: ") {
			t.Errorf("POST /v1/check%s: want a 400 naming check, got %v", q, err)
		}
	}
	var rep crdt.CheckReport
	if err := c.Do(context.Background(), "POST", "/v1/check?repair=1", nil, &rep); err != nil || !rep.OK {
		t.Errorf("POST /v1/check?repair=1 on a fresh store: %+v, %v", rep, err)
	}
	r := mustFerry(t, dir, "check", "--repair")
	if !strings.HasPrefix(r.Stdout, "store is whole: ") {
		t.Errorf("check --repair of a whole store:\n%s", r)
	}
}

// mountTmpfs mounts a tmpfs of size at dir, unmounted at the end of the
// test (after the nodes using it are stopped), or skips the test.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a small tmpfs to fill it up")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s): this test needs a small filesystem to fill", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, bytes.TrimSpace(out))
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
}

func remountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,size="+size, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s at %s: %v: %s", dir, size, err, bytes.TrimSpace(out))
	}
}

// appendConfig adds YAML lines to a data dir's config.yaml.
func appendConfig(t *testing.T, dir, text string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, datadir.SettingsFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// waitClean waits until the node says its store needs no repair.
func waitClean(t *testing.T, dir string) {
	t.Helper()
	eventually(t, filepath.Base(dir)+" has repaired its store (status: dirty false)", func() (bool, string) {
		st, r := status(t, dir)
		return r.Code == 0 && !st.Dirty, r.String()
	})
}

// checkJSON runs `ferry check --json` and decodes the report.
func checkJSON(t *testing.T, dir string, args ...string) (crdt.CheckReport, result) {
	t.Helper()
	r := ferry(t, dir, append([]string{"check", "--json"}, args...)...)
	var rep crdt.CheckReport
	if r.Code == 0 || r.Code == exitCheckProblems {
		if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
			t.Fatalf("check --json is not a report: %v\n%s", err, r)
		}
	}
	return rep, r
}

// mustCheckWhole runs `ferry check` (text, then --json) and fails unless
// the store is whole.
func mustCheckWhole(t *testing.T, dir string) {
	t.Helper()
	r := ferry(t, dir, "check")
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, "store is whole: ") {
		t.Fatalf("check of %s: want exit 0 and \"store is whole\":\n%s", filepath.Base(dir), r)
	}
	rep, r := checkJSON(t, dir)
	if r.Code != 0 || !rep.OK || len(rep.Problems) != 0 || rep.Blocks < rep.Heads {
		t.Fatalf("check --json of %s: want exit 0 and a whole store:\n%s", filepath.Base(dir), r)
	}
}

// syncWait runs `ferry sync --wait --timeout 60s` on dir and fails unless
// it exits 0.
func syncWait(t *testing.T, dir string) {
	t.Helper()
	r := runFerryWithin(t, syncWithin, nil, "--dir", dir, "sync", "--wait", "--timeout", "60s")
	if r.Code != 0 {
		t.Fatalf("want exit 0:\n%s", r)
	}
}

// unpackFixture extracts a .tar.gz of a data dir into dst, with the modes
// a data dir needs (0700 dirs, 0600 files) whatever the archive says.
func unpackFixture(t *testing.T, archive, dst string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", archive, err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", archive, err)
		}
		if !filepath.IsLocal(h.Name) {
			t.Fatalf("%s: entry %q leaves the destination", archive, h.Name)
		}
		path := filepath.Join(dst, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, 0o700); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				t.Fatal(err)
			}
			if err := out.Close(); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: entry %q of type %c: want only dirs and files", archive, h.Name, h.Typeflag)
		}
	}
}

// during is the value of the recipe's put on a full disk: 16 KB.
var during = "During" + strings.Repeat("-", 16<<10)

// fillDisk writes a file in dir until its filesystem is full.
func fillDisk(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return
		}
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}
