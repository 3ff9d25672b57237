package datadir

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
)

// IdentityFile is the node's private key inside the data dir.
const IdentityFile = "identity.key"

// Exists reports whether dir holds an initialised node (identity key).
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, IdentityFile))
	return err == nil
}

// LoadOrCreateIdentity reads a libp2p Ed25519 private key from path
// (crypto.MarshalPrivateKey format), or creates one if the file does not
// exist. A new key is written atomically (temporary file in the same
// directory, fsync, then link/rename into place) with mode 0600; the parent
// directory is created (0700) if needed.
//
// A file that exists but does not hold an Ed25519 key in that format is an
// error and is never overwritten.
func LoadOrCreateIdentity(path string) (crypto.PrivKey, error) {
	key, err := loadIdentity(path)
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}

	key, _, err = crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	data, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("identity: marshal key: %w", err)
	}
	created, err := writeNewFile(path, data)
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", path, err)
	}
	if !created {
		// Another process created the file between our read and our
		// write: use its key, never replace it.
		return loadIdentity(path)
	}
	return key, nil
}

// loadIdentity returns an error wrapping fs.ErrNotExist when the file does
// not exist.
func loadIdentity(path string) (crypto.PrivKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("identity %s: %w", path, err)
	}
	key, err := crypto.UnmarshalPrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("identity %s: not a libp2p private key: %w", path, err)
	}
	if key.Type() != cryptopb.KeyType_Ed25519 {
		return nil, fmt.Errorf("identity %s: key type %s, want Ed25519", path, key.Type())
	}
	return key, nil
}

// writeNewFile atomically creates path with data and mode 0600. It returns
// created=false (and no error) if path already exists; an existing file is
// never replaced.
func writeNewFile(path string, data []byte) (created bool, err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return false, err
	}
	tmpName := tmp.Name()
	defer func() {
		// On success the name has been linked/renamed away; removing it is
		// a harmless no-op (or removes the extra hard link).
		_ = os.Remove(tmpName)
	}()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return false, err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}

	// os.Link fails if path exists, so a concurrently created file is never
	// clobbered. Fall back to rename where hard links are not supported.
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		if _, statErr := os.Lstat(path); statErr == nil {
			return false, nil
		}
		if err := os.Rename(tmpName, path); err != nil {
			return false, err
		}
	}
	syncDir(dir)
	return true, nil
}

// syncDir makes a rename/link in dir durable (best effort).
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
