// Package ondisk looks for bytes in the files of a directory: how tests
// and benchmarks check that a purge or a GC left nothing of some data on
// disk, whatever file format holds it.
package ondisk

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// FilesHolding returns the paths of the regular files under dir whose
// bytes contain s. Files deleted while it reads (a GC running) are
// skipped.
func FilesHolding(dir, s string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(s)) {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look for %q under %s: %w", s, dir, err)
	}
	return out, nil
}
