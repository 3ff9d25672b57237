package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
)

// benchCleanSync: an office node (network on, loopback TCP) holds the
// imported contacts; a fresh node clean-syncs from it (node.CleanSync, what
// `ferry clean-sync` does: a snapshot copy of the office's store, then
// start, connect and catch up until its heads equal the office's). The
// baseline, in the same run: a plain copy of the office's data dir (the
// stopped office's files, io.Copy, fsync at the end).
func (e *env) benchCleanSync(ctx context.Context) (res result, err error) {
	c := e.cfg
	recs := e.contacts(c.cleanRecords)
	values := 0
	for _, r := range recs {
		values += len(r.Fields)
	}
	const officeName, copyName, freshName = "cleansync-office", "cleansync-copy", "cleansync-fresh"
	officeDir := filepath.Join(e.root, officeName)

	// The office's store: schema and contacts, written without network.
	e.progress("cleansync: office imports %d contacts (%d field values)", len(recs), values)
	t0 := time.Now()
	if err := e.fillStore(ctx, nodeSpec{name: officeName, role: node.RoleOffice}, recs, freshName); err != nil {
		return res, err
	}
	e.progress("cleansync: office store written in %s", fmtDur(time.Since(t0)))

	// Baseline: copy the stopped office's data dir.
	e.progress("cleansync: baseline, plain copy of the office's data dir")
	cp, err := copyDir(officeDir, filepath.Join(e.root, copyName))
	if err != nil {
		return res, fmt.Errorf("copy the office's data dir: %w", err)
	}
	e.progress("cleansync: baseline copied %d files, %s in %s", cp.files, fmtBytes(cp.bytes), fmtDur(cp.took))

	// The office, now on the network.
	office, err := e.startNode(ctx, nodeSpec{name: officeName, network: true, role: node.RoleOffice})
	if err != nil {
		return res, err
	}
	defer closeNode(office, &err)
	if err := waitDigest(ctx, office); err != nil {
		return res, fmt.Errorf("office digest: %w", err)
	}
	officeDigest, officeCount, err := digestContacts(ctx, office.Store().Everyone())
	if err != nil {
		return res, err
	}
	if officeCount != len(recs) {
		return res, fmt.Errorf("office lists %d contacts, want %d", officeCount, len(recs))
	}

	e.progress("cleansync: fresh node clean-syncs from the office")
	cctx, cancel := context.WithTimeout(ctx, c.cleanTimeout)
	defer cancel()
	spec := nodeSpec{name: freshName, network: true, peers: office.Addrs()[:1], founder: officeName}
	phases := e.watchPhases("cleansync")
	stop := e.profile("cleansync-fresh")
	phases.start = time.Now()
	cs, err := e.cleanSync(cctx, spec, phases.progress)
	wall := time.Since(phases.start)
	stop()
	if err != nil {
		return res, err
	}
	e.progress("cleansync: done in %s (CleanSync returned after %s): %d entries, %s, then %d blocks",
		fmtDur(cs.Took), fmtDur(wall), cs.Entries, fmtBytes(cs.Bytes), cs.Blocks)

	// Bytes on the wire, as the office's libp2p bandwidth counter saw them.
	freshID, err := e.peerID(freshName)
	if err != nil {
		return res, err
	}
	sent, recv, err := peerBytes(ctx, office, freshID)
	if err != nil {
		return res, err
	}

	// Check the copy: same heads and contacts as the office.
	fresh, err := e.startNode(ctx, nodeSpec{name: freshName, founder: officeName})
	if err != nil {
		return res, err
	}
	defer closeNode(fresh, &err)
	fh, err := fresh.Store().Everyone().Heads(ctx)
	if err != nil {
		return res, err
	}
	oh, err := office.Store().Everyone().Heads(ctx)
	if err != nil {
		return res, err
	}
	if !slices.Equal(sortedHeads(fh), sortedHeads(oh)) {
		return res, fmt.Errorf("after clean sync the fresh node's heads %v differ from the office's %v", sortedHeads(fh), sortedHeads(oh))
	}
	freshDigest, freshCount, err := digestContacts(ctx, fresh.Store().Everyone())
	if err != nil {
		return res, err
	}
	if freshDigest != officeDigest || freshCount != officeCount {
		return res, fmt.Errorf("after clean sync the fresh node lists %d contacts (digest %s), the office %d (digest %s)", freshCount, freshDigest, officeCount, officeDigest)
	}
	if err := fresh.Close(); err != nil {
		return res, err
	}
	freshSize, err := dirSize(filepath.Join(e.root, freshName))
	if err != nil {
		return res, err
	}

	// Bytes received by the new node: what the office sent it (the
	// snapshot's short-lived host and the node itself have the new node's
	// peer id; CleanSync's hosts keep no bandwidth counter of their own).
	wire := sent
	what := fmt.Sprintf("%d contacts × 8 fields", len(recs))
	return result{
		rows: []row{
			{"clean sync of a fresh node from the office (" + what + "): time until its heads equal the office's",
				fmt.Sprintf("%s (snapshot of %d entries, then %d blocks)", fmtDur(cs.Took), cs.Entries, cs.Blocks),
				fmt.Sprintf("%s (plain copy of the office's data dir, %d files, fsync at the end)", fmtDur(cp.took), cp.files),
				fmtRatio(float64(cs.Took), float64(cp.took))},
			{"clean sync, bytes received by the new node (libp2p stream payload, the office's per-peer counter)",
				fmt.Sprintf("%s (the office sent %s to the new node and received %s from it)", fmtBytes(wire), fmtBytes(sent), fmtBytes(recv)),
				fmt.Sprintf("%s (the office's data dir, bytes copied)", fmtBytes(cp.bytes)),
				fmtRatio(float64(wire), float64(cp.bytes))},
		},
		notes: []string{
			fmt.Sprintf("Clean sync: the office's store gets the crm schema and %d contacts (%d field values) by Store.Import without network; the office is stopped and its data dir copied (the baseline), then it is started as an office on loopback TCP and left to build its first digest (it reads the whole store). "+
				"A fresh node configured with the office as its only peer then runs node.CleanSync, as `ferry clean-sync` and `ferry init --from-office` do: a snapshot copy of the office's store over /ferry/snapshot/2.0.0 (one zstd stream) (a short-lived host with the fresh node's identity), then the node starts, connects, merges and exchanges heads, and CleanSync returns once the fresh node has no queued DAG jobs and its heads equal the office's (the fresh node's own node-info delta included, merged by the office). "+
				"Time: CleanSync's own Took, from the call until the heads are equal (phases: %s); with the fresh node's shutdown CleanSync returned after %s. Checked afterwards: same heads and same contacts (digest %s, %d contacts) on both. "+
				"Bytes: the bytes the new node received are the libp2p stream bytes the office sent to its peer id (the snapshot's short-lived host and the node itself both have the fresh node's identity), as counted by the office's bandwidth counter (ferry_peer_sent_bytes_total on its /metrics), read once it settled (it is updated once a second); it counts stream payloads, not TCP, Noise or yamux overhead. The new node itself exposes no such counter during CleanSync. The snapshot itself was %s of keys and values (%d entries). The fresh node's data dir then held %s (%s allocated).",
				len(recs), values, phases, fmtDur(wall), officeDigest, officeCount, fmtBytes(cs.Bytes), cs.Entries, fmtBytes(freshSize.bytes), fmtBytes(freshSize.alloc)),
			fmt.Sprintf("Clean-sync baseline: every file of the stopped office's data dir (identity key, badger store: %s in %d files, %s allocated) read with io.Copy into a new dir on the same file system, then every file and dir fsynced; the source files were just written, so both sides read them from the page cache. A copy moves no data over a network and needs the office stopped (or a file-system snapshot); it is the floor of any way of moving the state. "+
				"Not measured: the time a fresh node would take to replay the office's DAG instead of copying its store (what CleanSync falls back to when the office serves no snapshot).",
				fmtBytes(cp.bytes), cp.files, fmtBytes(cp.alloc)),
		},
	}, nil
}

// fillStore starts the node of spec without network, applies the schema,
// enrols members, imports recs, checks the count and closes the node.
func (e *env) fillStore(ctx context.Context, spec nodeSpec, recs []crdt.ImportRecord, members ...string) (err error) {
	spec.network = false
	n, err := e.startNode(ctx, spec)
	if err != nil {
		return err
	}
	defer closeNode(n, &err)
	st := n.Store().Everyone()
	if err := e.applySchema(ctx, st); err != nil {
		return err
	}
	if err := e.enrol(ctx, n, members...); err != nil {
		return err
	}
	if _, err := importAll(ctx, st, recs); err != nil {
		return err
	}
	if _, got, err := digestContacts(ctx, st); err != nil {
		return err
	} else if got != len(recs) {
		return fmt.Errorf("node %s lists %d contacts after the import, want %d", spec.name, got, len(recs))
	}
	return nil
}

// syncPhases follows a clean sync (progress is its progress function):
// when each phase began, from start, and a progress line every
// progressEvery.
type syncPhases struct {
	e      *env
	prefix string // of the progress lines
	start  time.Time
	at     map[string]time.Duration
	last   string
	// lastReport: when the last progress line was written.
	lastReport time.Time
}

// watchPhases follows a clean sync; the caller sets start as it calls
// node.CleanSync.
func (e *env) watchPhases(prefix string) *syncPhases {
	return &syncPhases{e: e, prefix: prefix, at: map[string]time.Duration{}, lastReport: time.Now()}
}

func (s *syncPhases) progress(p node.CleanSyncProgress) {
	if p.Phase != s.last {
		s.at[p.Phase] = time.Since(s.start)
		s.last = p.Phase
	}
	if time.Since(s.lastReport) >= progressEvery {
		s.lastReport = time.Now()
		s.e.progress("%s: %s: %d entries, %s copied; %d blocks fetched", s.prefix, p.Phase, p.Entries, fmtBytes(p.CopyBytes), p.Blocks)
	}
}

// String says when each phase began.
func (s *syncPhases) String() string {
	var parts []string
	for _, p := range []string{"copying", "connecting", "fetching", "merging"} {
		if d, ok := s.at[p]; ok {
			parts = append(parts, fmt.Sprintf("%s from %s", p, fmtDur(d)))
		}
	}
	return strings.Join(parts, ", ")
}

// waitDigest waits until n has built its first digest: a node builds it
// at start, reading the whole store, and it must not compete with what is
// measured next.
func waitDigest(ctx context.Context, n *node.Node) error {
	return waitFor(ctx, 5*time.Minute, func() bool { return n.Status(ctx).Digest != "" })
}

// waitFor polls cond every pollEvery until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
	return nil
}

// peerBytes reads the bytes n sent to and received from p off n's metrics
// (ferry_peer_sent_bytes_total, ferry_peer_received_bytes_total: the libp2p
// bandwidth counter), once two reads 1.1 s apart agree (the counter's
// totals are updated once a second).
func peerBytes(ctx context.Context, n *node.Node, p peer.ID) (sent, recv int64, err error) {
	read := func() (int64, int64, error) {
		rec := httptest.NewRecorder()
		n.Handler().ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusOK {
			return 0, 0, fmt.Errorf("metrics: HTTP %d", rec.Code)
		}
		var s, r int64
		found := false
		label := `{peer="` + p.String() + `"}`
		sc := bufio.NewScanner(rec.Body)
		for sc.Scan() {
			name, val, ok := strings.Cut(sc.Text(), " ")
			if !ok || !strings.HasSuffix(name, label) {
				continue
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err != nil {
				return 0, 0, fmt.Errorf("metrics: %q: %w", sc.Text(), err)
			}
			switch strings.TrimSuffix(name, label) {
			case "ferry_peer_sent_bytes_total":
				s, found = int64(v), true
			case "ferry_peer_received_bytes_total":
				r, found = int64(v), true
			}
		}
		if !found {
			return 0, 0, fmt.Errorf("metrics: no bandwidth figures for peer %s", p)
		}
		return s, r, nil
	}
	prevS, prevR := int64(-1), int64(-1)
	for range 30 {
		s, r, err := read()
		if err != nil {
			return 0, 0, err
		}
		if s == prevS && r == prevR {
			return s, r, nil
		}
		prevS, prevR = s, r
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(1100 * time.Millisecond):
		}
	}
	return prevS, prevR, errors.New("metrics: the bandwidth counter did not settle")
}

// sizes of a directory tree: files, apparent bytes and allocated bytes.
type sizes struct {
	files        int
	bytes, alloc int64
}

// dirSize walks dir and sums its regular files' sizes and allocated blocks
// (storeSize's total: the same walk).
func dirSize(dir string) (sizes, error) {
	s, err := storeSize(dir)
	return s.total(), err
}

// dirCopy is what copyDir did.
type dirCopy struct {
	sizes
	took time.Duration
}

// copyDir copies every regular file under src to dst (io.Copy), then
// fsyncs every file and directory written, and times it all.
func copyDir(src, dst string) (c dirCopy, err error) {
	var files []*os.File
	var dirs []string
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	t0 := time.Now()
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			dirs = append(dirs, to)
			return os.MkdirAll(to, 0o700)
		case !d.Type().IsRegular():
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		files = append(files, out)
		n, err := io.Copy(out, in)
		c.files++
		c.bytes += n
		return err
	})
	if err != nil {
		return c, err
	}
	for _, f := range files {
		if err := f.Sync(); err != nil {
			return c, err
		}
	}
	for _, d := range dirs {
		f, err := os.Open(d)
		if err != nil {
			return c, err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return c, err
		}
	}
	c.took = time.Since(t0)
	s, err := dirSize(dst)
	c.alloc = s.alloc
	return c, err
}

// fmtBytes formats a byte count in decimal units.
func fmtBytes(n int64) string {
	switch {
	case n >= 10e9:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 10e6:
		return fmt.Sprintf("%.0f MB", float64(n)/1e6)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.0f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}
