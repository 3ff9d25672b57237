package enrol

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

// inviteKeyRoot holds an office's open invitations, in the store's local
// (not replicated) keyspace.
const inviteKeyRoot = "/ferry/local/invites"

// Invitation is what an office keeps of a token it issued: the hash of its
// secret, the name and role it grants, until when.
type Invitation struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Expires time.Time `json:"expires"`
}

// Book holds an office's open invitations in its local (not
// replicated) keyspace.
type Book struct {
	mu    sync.Mutex
	ds    ds.Datastore
	open  map[string]Invitation // secret hash -> Invitation
	clock func() time.Time
}

func LoadBook(ctx context.Context, d ds.Datastore) (*Book, error) {
	b := &Book{ds: d, open: map[string]Invitation{}, clock: time.Now}
	res, err := d.Query(ctx, query.Query{Prefix: inviteKeyRoot})
	if err != nil {
		return nil, fmt.Errorf("load invitations: %w", err)
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return nil, fmt.Errorf("load invitations: %w", r.Error)
		}
		var inv Invitation
		if json.Unmarshal(r.Value, &inv) == nil {
			b.open[strings.TrimPrefix(r.Key, inviteKeyRoot+"/")] = inv
		}
	}
	return b, nil
}

// Pending reports whether an unexpired Invitation exists.
func (b *Book) Pending() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock()
	for _, inv := range b.open {
		if now.Before(inv.Expires) {
			return true
		}
	}
	return false
}

func secretHash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func (b *Book) Add(ctx context.Context, secret string, inv Invitation) error {
	data, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	h := secretHash(secret)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.ds.Put(ctx, ds.NewKey(inviteKeyRoot+"/"+h), data); err != nil {
		return fmt.Errorf("store Invitation: %w", err)
	}
	if err := b.ds.Sync(ctx, ds.NewKey(inviteKeyRoot)); err != nil {
		return fmt.Errorf("store Invitation: %w", err)
	}
	b.open[h] = inv
	return nil
}

// Take redeems an Invitation: it is removed whatever happens next, so a
// secret works once.
func (b *Book) Take(ctx context.Context, secret string) (Invitation, error) {
	h := secretHash(secret)
	b.mu.Lock()
	defer b.mu.Unlock()
	inv, ok := b.open[h]
	if !ok {
		return inv, fmt.Errorf("%w: unknown or already used Invitation", ErrInviteRefused)
	}
	delete(b.open, h)
	if err := b.ds.Delete(ctx, ds.NewKey(inviteKeyRoot+"/"+h)); err != nil {
		return inv, fmt.Errorf("redeem Invitation: %w", err)
	}
	if !b.clock().Before(inv.Expires) {
		return inv, fmt.Errorf("%w: the Invitation expired at %s", ErrInviteRefused, inv.Expires.Format(time.RFC3339))
	}
	return inv, nil
}
