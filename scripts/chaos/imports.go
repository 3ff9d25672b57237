package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// importLines draws count records: fresh ids, and some hot records.
func (c *cluster) importLines(r *rand.Rand, count int) (lines []map[string]any) {
	return c.importLinesAs(r, count, fmt.Sprintf("i%d", c.step))
}

// importLinesAs is importLines with fresh ids PREFIX-k (PREFIX starts with
// "i" and is unique to the import).
func (c *cluster) importLinesAs(r *rand.Rand, count int, prefix string) (lines []map[string]any) {
	seen := map[string]bool{}
	for k := range count {
		id := fmt.Sprintf("%s-%d", prefix, k)
		if r.IntN(100) < 8 {
			id = hotID(r, 10)
		}
		rec := map[string]any{}
		perm := r.Perm(len(fieldNames))
		for _, i := range perm[:2+r.IntN(4)] {
			v, _ := randomValue(r, fieldNames[i])
			rec[fieldNames[i]] = v
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		rec["id"] = id
		lines = append(lines, rec)
	}
	return lines
}

// writeImport writes lines as a JSON Lines file of the schedule.
func (c *cluster) writeImport(lines []map[string]any) (string, error) {
	path := filepath.Join(c.root, fmt.Sprintf("import-step%d.jsonl", c.step))
	var b strings.Builder
	for _, l := range lines {
		data, err := json.Marshal(l)
		if err != nil {
			return "", err
		}
		b.Write(data)
		b.WriteByte('\n')
	}
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// ackImport records every line of an acknowledged import.
func (c *cluster) ackImport(kind string, n *node, lines []map[string]any) {
	for _, l := range lines {
		w := &ackedWrite{kind: kind, step: c.step, node: n, id: l["id"].(string), same: map[string]any{}}
		for f, v := range l {
			if f != "id" {
				w.same[f] = v
			}
		}
		c.noteAcked(w)
		c.acked = append(c.acked, w)
		c.notePending(w)
	}
	c.stats.acked++
}

// opImport imports 20 to 200 records; on a running node it is sometimes
// killed while the import runs.
func (c *cluster) opImport(ctx context.Context, r *rand.Rand) {
	n := c.anyNode(r)
	lines := c.importLines(r, 20+r.IntN(181))
	killIt := r.IntN(100) < 40
	// The CLI starts in ~10 ms and an import of 20-200 records takes some
	// 20-80 ms more: most kills land while it runs.
	delay := time.Duration(5+r.IntN(70)) * time.Millisecond
	if !killIt || !n.running() || len(c.downNodes()) >= c.maxDown() {
		c.importOn(ctx, "import", n, lines)
		return
	}
	full := n.full
	if full {
		c.markImport(lines)
	}
	bg, ok := c.startImport(ctx, n, lines)
	if !ok {
		return
	}
	sleep(ctx, delay)
	c.kill(n, fmt.Sprintf("mid-import, %s after it started", delay))
	// Wait for the command before anything else touches the dir: a command
	// that found no node opens the store itself.
	res := c.wait(bg)
	switch {
	case full:
		c.importOnFull("import-during-kill", n, lines, res, true)
	case res.ok():
		c.ackImport("import-during-kill", n, lines)
	}
}

// startImport prepares an import (prepareImport) and starts it on n in the
// background; ok is false (and the problem recorded) when it could not.
func (c *cluster) startImport(ctx context.Context, n *node, lines []map[string]any) (*bgCommand, bool) {
	path, ok := c.prepareImport(n, lines)
	if !ok {
		return nil, false
	}
	bg, err := c.ferryBackground(ctx, n, "import", collection, path)
	if err != nil {
		c.problem("start import: %v", err)
		return nil, false
	}
	return bg, true
}

// prepareImport routes the lines for n (routeImport), notes the imported
// ids, writes the import file and counts the import; ok is false (and the
// problem recorded) when the file could not be written.
func (c *cluster) prepareImport(n *node, lines []map[string]any) (string, bool) {
	c.routeImport(n, lines)
	for _, l := range lines {
		id := l["id"].(string)
		c.touched[id]++
		if strings.HasPrefix(id, "i") {
			c.importedIDs = append(c.importedIDs, id)
		}
	}
	path, err := c.writeImport(lines)
	if err != nil {
		c.problem("write import file: %v", err)
		return "", false
	}
	c.stats.imports++
	return path, true
}
