package ondisk

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestFilesHolding(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a.vlog", "xx secret-1 yy")
	write("sub/b.sst", "nothing here")
	write("sub/c.sst", "\x00\x01secret-1")
	got, err := FilesHolding(dir, "secret-1")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "a.vlog"), filepath.Join(dir, "sub/c.sst")}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("FilesHolding = %v, want %v", got, want)
	}
	if got, err := FilesHolding(dir, "absent"); err != nil || len(got) != 0 {
		t.Errorf("FilesHolding(absent) = %v, %v", got, err)
	}
	if _, err := FilesHolding(filepath.Join(dir, "missing"), "x"); err != nil {
		t.Errorf("a missing dir: %v, want nothing found", err)
	}
}
