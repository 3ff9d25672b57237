package datadir

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/ferry-crm/ferry/internal/ondisk"
)

// partialWrite makes badger's value log look as after a write that failed
// part-way: n bytes past the end badger records.
func partialWrite(t *testing.T, g *Guard, n int) {
	t.Helper()
	fd, _, unlock, err := valueLogFile(g.Datastore.DB)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := fd.Write(bytes.Repeat([]byte{0xAB}, n)); err != nil {
		t.Fatal(err)
	}
}

// value is 72 KB: go-ds-badger's options keep values under 64 KB in the
// LSM tree, larger ones (blocks of imports) in the value log.
func value(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("value %05d|", i)), 6000) }

// TestRewindValueLog: after a write that failed part-way, badger stores
// later values at one place and reads them at another; the guard cuts the
// partial bytes first, so later values read back exactly.
func TestRewindValueLog(t *testing.T) {
	ctx := context.Background()
	for _, guarded := range []bool{false, true} {
		t.Run(map[bool]string{false: "without", true: "with"}[guarded], func(t *testing.T) {
			d, err := OpenStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			g := NewGuard(d, slog.Default())
			if n, err := rewindValueLog(d.DB); err != nil || n != 0 {
				t.Fatalf("rewind of a healthy log: %d bytes, %v", n, err)
			}
			if err := g.Put(ctx, ds.NewKey("/before"), value(0)); err != nil {
				t.Fatal(err)
			}
			partialWrite(t, g, 1000)
			if guarded {
				// What the guard does after any failed write.
				if n, err := rewindValueLog(d.DB); err != nil || n != 1000 {
					t.Fatalf("rewind: %d bytes, %v; want 1000", n, err)
				}
			}
			for i := 1; i <= 20; i++ {
				if err := g.Put(ctx, ds.NewKey(fmt.Sprintf("/after/%d", i)), value(i)); err != nil {
					t.Fatal(err)
				}
			}
			bad := 0
			for i := 1; i <= 20; i++ {
				func() {
					defer func() {
						if recover() != nil { // badger panics on some misplaced values
							bad++
						}
					}()
					v, err := g.Get(ctx, ds.NewKey(fmt.Sprintf("/after/%d", i)))
					if err != nil || !bytes.Equal(v, value(i)) {
						bad++
					}
				}()
			}
			t.Logf("%d of 20 values written after the partial write read back wrong", bad)
			if v, err := g.Get(ctx, ds.NewKey("/before")); err != nil || !bytes.Equal(v, value(0)) {
				t.Fatalf("the value written before the failure: %v", err)
			}
			switch {
			case guarded && bad > 0:
				t.Fatalf("%d of 20 values read back wrong after the rewind", bad)
			case !guarded && bad == 0:
				t.Fatal("without the rewind every value read back right: the test no longer reproduces badger's bug")
			}
		})
	}
}

// TestGuardSurvivesFullDisk: a real filesystem that fills up
// (tmpfs, as root; skipped otherwise). Writes fail, space comes back, and
// every value acknowledged before and after reads back exactly.
func TestGuardSurvivesFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a tmpfs")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	for _, guarded := range []bool{false, true} {
		t.Run(map[bool]string{false: "without", true: "with"}[guarded], func(t *testing.T) {
			bad := fillAndCheck(t, guarded)
			switch {
			case guarded && bad > 0:
				t.Fatalf("%d acknowledged values read back wrong or lost", bad)
			case !guarded && bad == 0:
				t.Fatal("without the guard every value survived: the test no longer reproduces badger's bug")
			}
		})
	}
}

// fillAndCheck fills a 3 MB tmpfs through a store (guarded or raw badger),
// gives it room again, writes more, and returns how many acknowledged
// values read back wrong, while open or after a reopen.
func fillAndCheck(t *testing.T, guarded bool) int {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	ctx := context.Background()
	d, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	var st ds.Datastore = d
	g := NewGuard(d, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if guarded {
		st = g
	}
	acked := map[string][]byte{}
	failed := 0
	for i := 0; i < 2000 && failed < 3; i++ {
		k := fmt.Sprintf("/full/%d", i)
		if err := st.Put(ctx, ds.NewKey(k), value(i)); err != nil {
			failed++
			continue
		}
		acked[k] = value(i)
	}
	if failed == 0 {
		t.Fatal("the disk never filled up")
	}
	if out, err := exec.Command("mount", "-o", "remount,size=64m", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	for i := 0; i < 100; i++ {
		k := fmt.Sprintf("/after/%d", i)
		if err := st.Put(ctx, ds.NewKey(k), value(i)); err != nil {
			t.Fatalf("write with room again: %v", err)
		}
		acked[k] = value(i)
	}
	count := func(get func(ds.Key) ([]byte, error)) (bad int) {
		defer func() {
			if recover() != nil { // badger panics on some misplaced values
				bad = len(acked)
			}
		}()
		for k, want := range acked {
			v, err := get(ds.NewKey(k))
			if err != nil || !bytes.Equal(v, want) {
				bad++
			}
		}
		return bad
	}
	bad := count(func(k ds.Key) ([]byte, error) { return d.Get(ctx, k) })
	t.Logf("%d writes failed, %d rewinds; open: %d of %d acknowledged values wrong", failed, g.Rewinds(), bad, len(acked))
	if err := d.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	d2, err := OpenStore(dir)
	if err != nil {
		t.Logf("reopen: %v", err)
		return bad + len(acked)
	}
	defer d2.Close()
	reopened := count(func(k ds.Key) ([]byte, error) { return d2.Get(ctx, k) })
	t.Logf("reopened: %d of %d acknowledged values wrong or lost", reopened, len(acked))
	return bad + reopened
}

// TestRotateValueLog: values dropped by prefix (a channel purged) leave
// no byte on disk once the value log was rotated and GC ran: not in the
// value log (whose only file held them), not in the tables. What was not
// dropped still reads back.
func TestRotateValueLog(t *testing.T) {
	for _, rotate := range []bool{true, false} {
		t.Run(fmt.Sprintf("rotate=%v", rotate), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			d, err := OpenStore(dir) // 64 MiB files: everything in one
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			g := NewGuard(d, slog.New(slog.NewTextHandler(io.Discard, nil)))
			for i := range 2000 {
				if err := g.Put(ctx, ds.NewKey(fmt.Sprintf("/ch/east/%d", i)), []byte(fmt.Sprintf("secret-east-%06d", i))); err != nil {
					t.Fatal(err)
				}
				if err := g.Put(ctx, ds.NewKey(fmt.Sprintf("/ch/west/%d", i)), []byte(fmt.Sprintf("kept-west-%06d", i))); err != nil {
					t.Fatal(err)
				}
			}
			if err := g.DropPrefix("/ch/east/"); err != nil {
				t.Fatal(err)
			}
			if rotate {
				if err := g.RotateValueLog(ctx); err != nil {
					t.Fatal(err)
				}
			}
			c := StartGC(g, dir, GCOptions{Idle: time.Hour, Interval: time.Hour})
			defer c.Close()
			if _, err := c.Reclaim(ctx); err != nil {
				t.Fatal(err)
			}
			found, err := ondisk.FilesHolding(filepath.Join(dir, StoreDir), "secret-east-")
			if err != nil {
				t.Fatal(err)
			}
			if rotate && len(found) > 0 {
				t.Errorf("purged values still on disk after the rotation and GC, in %v", found)
			}
			if !rotate && len(found) == 0 {
				t.Error("without a rotation the purged values are gone too: this test proves nothing")
			}
			for i := range 2000 {
				v, err := g.Get(ctx, ds.NewKey(fmt.Sprintf("/ch/west/%d", i)))
				if err != nil || string(v) != fmt.Sprintf("kept-west-%06d", i) {
					t.Fatalf("/ch/west/%d after the rotation: %q, %v", i, v, err)
				}
			}
		})
	}
}
