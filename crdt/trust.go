package crdt

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ipfs/go-datastore/query"

	"github.com/ferry-crm/ferry/schema"
)

// Trust makes a store accept only what the members of one network wrote
// (docs/security.md). Every operation carries its writer's signature; the
// replicated _members collection says who is a member, with which role and
// until when; the founding office is a member by definition. An operation
// that fails a check is never shown, on any node: it stays in the store
// (go-ds-crdt keeps everything), is listed by Ignored, and what it
// superseded is shown again.
type Trust struct {
	// Founder is the peer id of the office that created the network: the
	// root of membership, always an office member, never revoked.
	Founder string
	// Sign signs msg with this node's identity key.
	Sign func(msg []byte) ([]byte, error)
	// Verify checks that sig is writer's signature of msg.
	Verify func(writer string, msg, sig []byte) bool
}

func (t *Trust) validate() error {
	if t.Founder == "" || strings.Contains(t.Founder, "/") || t.Sign == nil || t.Verify == nil {
		return errors.New("trust needs a founder id, a signer and a verifier")
	}
	return nil
}

// Reserved names of the trust model.
const (
	// MembersCollection holds the network's members: one record per peer
	// id, fields name, role and revoked. Only office members write it.
	MembersCollection = "_members"
	// KeepField is the pseudo-field of the operation that ends a record
	// conflict in favour of the edits: it supersedes the deletes.
	KeepField = "_keep"
)

// Errors of writes refused by the trust model.
var (
	// ErrNotMember: this node is not (yet) a member of its network.
	ErrNotMember = errors.New("this node is not a member of the network")
	// ErrForbidden: this node's role may not write that collection.
	ErrForbidden = errors.New("not allowed")
)

// Member is one member of the network, as the replicated state says.
type Member struct {
	ID   string
	Name string
	Role string
	// Founder: the office that created the network.
	Founder bool
	// Revoked: writes newer than RevokedAt are ignored everywhere.
	Revoked   bool
	RevokedAt Timestamp
	// By is the office that wrote the latest membership change.
	By string
}

// validAt reports whether m may write at time t.
func (m Member) validAt(t Timestamp) bool { return !m.Revoked || t < m.RevokedAt }

// IgnoredOp is an operation this node does not show because it failed a
// check of the trust model.
type IgnoredOp struct {
	Collection string
	ID         string
	Field      string
	Op         OpID
	Reason     string
}

// Reasons an operation is ignored.
const (
	ReasonBadSignature = "invalid signature"
	ReasonNotMember    = "writer is not a member"
	ReasonRevoked      = "writer was revoked before writing it"
	ReasonRole         = "writer's role may not write this collection"
	ReasonNotOwn       = "a node may only describe itself"
	// ReasonWrongStore: a write, in a channel store, of a collection
	// channels do not hold (Ferry's own, or one the schema does not route).
	ReasonWrongStore = "written in the wrong store: a routed collection's records belong in their channel, every other one's in the everyone store"
	// ReasonNotGranted: a write in a channel store by a laptop that was
	// not granted the channel at the write's time, and that no office
	// vouches for.
	ReasonNotGranted = "writer was not granted this channel when it wrote it"
)

// view is what decides whether an operation counts: the members, the
// operations with a bad signature and the schema's writers; in a channel
// store, also its channel, the grants and the schema's routing. nil: open
// network, everything counts.
type view struct {
	founder string
	members map[string]Member
	badSig  func(key string) bool
	// channel is the channel of the store ("": the everyone store);
	// grants and schema are its authority's (set with channel only).
	channel string
	grants  *Grants
	schema  *schema.Schema
}

// officeVouched reports whether a write's voucher, if it has one (see
// Store.vouch), is a current office member: only an office vouches.
func (v *view) officeVouched(w *write) bool {
	if w.Voucher == "" {
		return true
	}
	m, ok := v.members[w.Voucher]
	return ok && !m.Revoked && m.Role == RoleOffice
}

// check returns why op, of a record of collection whose writers are
// given, does not count ("" when it does); voucher is the write's (see
// Store.vouch; "" when none). Signatures are checked apart.
func (v *view) check(collection, eid string, writers []string, op Op, voucher string) string {
	if v == nil {
		return ""
	}
	m, ok := v.members[op.ID.Writer]
	if !ok {
		return ReasonNotMember
	}
	if !m.validAt(op.ID.Time) {
		return ReasonRevoked
	}
	if r := v.wrongStore(collection); r != "" {
		return r
	}
	if op.Field == MovedField && m.Role != RoleOffice {
		return ReasonRole // only an office moves records between channels
	}
	switch collection {
	case MembersCollection, SchemaCollection, LostCollection, EpochsCollection, GrantsCollection, ChannelsCollection:
		if m.Role != RoleOffice {
			return ReasonRole
		}
	case NodesCollection:
		if own, _ := EscapeID(op.ID.Writer); own != eid {
			return ReasonNotOwn
		}
	default:
		if len(writers) > 0 && !slices.Contains(writers, m.Role) {
			return ReasonRole
		}
	}
	return v.notGranted(collection, m, op, voucher)
}

// localWrite marks the context of this node's own commits: their operations
// were signed here and are not verified again when go-ds-crdt merges them.
type localWrite struct{}

func withLocalWrite(ctx context.Context) context.Context {
	return context.WithValue(ctx, localWrite{}, true)
}

func isLocalWrite(ctx context.Context) bool { return ctx.Value(localWrite{}) != nil }

// badSigRoot is where operations whose signature failed are marked, inside
// go-ds-crdt's namespace so that a snapshot (clean sync) carries the marks.
func (s *Store) badSigRoot() string {
	return s.layout().badSigs().String()
}

// loadBadSigs reads the marks of operations whose signature failed.
func (s *Store) loadBadSigs(ctx context.Context) error {
	root := s.badSigRoot()
	res, err := s.base.Query(ctx, query.Query{Prefix: root, KeysOnly: true})
	if err != nil {
		return fmt.Errorf("load signature marks: %w", err)
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return fmt.Errorf("load signature marks: %w", r.Error)
		}
		s.badSig.Store(strings.TrimPrefix(r.Key, root), true)
	}
	return nil
}

func (s *Store) isBadSig(key string) bool {
	_, bad := s.badSig.Load(key)
	return bad
}

// view returns what decides which operations count (nil: open network).
// A channel store reads members, grants and schema from its authority;
// signature marks are every store's own.
func (s *Store) view(ctx context.Context) (*view, error) {
	if s.opts.Trust == nil {
		return nil, nil
	}
	members, err := s.members(ctx)
	if err != nil {
		return nil, err
	}
	v := &view{founder: s.opts.Trust.Founder, members: members, badSig: s.isBadSig}
	if s.opts.Channel != "" {
		v.channel = s.opts.Channel
		if v.grants, err = s.grants(ctx); err != nil {
			return nil, err
		}
		if v.schema, err = s.Schema(ctx); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// members computes the membership from the visible operations of _members.
// An operation of _members counts when its writer was an office member when
// it wrote; the founder is one by definition. Since membership decides
// which membership operations count, it is computed to a fixed point,
// starting from the founder alone. The result is shared: do not modify it.
func (s *Store) members(ctx context.Context) (map[string]Member, error) {
	if a := s.auth(); a != s {
		return a.members(ctx)
	}
	s.membersMu.Lock()
	defer s.membersMu.Unlock()
	if s.membersCache != nil && !s.membersStale.Load() {
		return s.membersCache, nil
	}
	s.membersStale.Store(false)
	byPeer := map[string]map[string][]Op{} // peer id -> field -> ops
	err := s.scanGrouped(ctx, MembersCollection, func(rec *recordOps, kp keyParts, w *write) {
		if s.isBadSig(writeKey(MembersCollection, kp.EscapedID, kp.Op).String()) {
			return
		}
		for _, op := range w.Ops {
			rec.add(op)
		}
	}, func(rec *recordOps) error {
		id, err := UnescapeID(rec.escapedID)
		if err != nil {
			return nil
		}
		rec.prune()
		byPeer[id] = rec.fields
		return nil
	})
	if err != nil {
		s.membersStale.Store(true)
		return nil, fmt.Errorf("load members: %w", err)
	}
	founder := s.opts.Trust.Founder
	root := map[string]Member{founder: {ID: founder, Role: RoleOffice, Founder: true}}
	peers := slices.Sorted(maps.Keys(byPeer))
	cur := root
	for range len(peers) + 2 {
		next := maps.Clone(root)
		for _, id := range peers {
			if id == founder {
				if f := pickMemberField(byPeer[id]["name"], cur); f != nil {
					m := next[id]
					m.Name, _ = f.Value.(string)
					next[id] = m
				}
				continue
			}
			m, ok := foldMember(id, byPeer[id], cur)
			if ok {
				next[id] = m
			}
		}
		if maps.Equal(next, cur) {
			break
		}
		cur = next
	}
	s.membersCache = cur
	return cur, nil
}

// pickMemberField returns the newest of ops written by an office member
// valid at the time (nil: none).
func pickMemberField(ops []Op, members map[string]Member) *Op {
	var best *Op
	for i := range ops {
		op := &ops[i]
		w, ok := members[op.ID.Writer]
		if !ok || w.Role != RoleOffice || !w.validAt(op.ID.Time) {
			continue
		}
		if best == nil || op.ID.Newer(best.ID) {
			best = op
		}
	}
	return best
}

// foldMember computes one member from its record's operations, counting
// only those written by office members of the previous round.
func foldMember(id string, fields map[string][]Op, members map[string]Member) (Member, bool) {
	role := pickMemberField(fields["role"], members)
	if role == nil {
		return Member{}, false
	}
	m := Member{ID: id, By: role.ID.Writer}
	m.Role, _ = role.Value.(string)
	if m.Role != RoleOffice && m.Role != RoleLaptop {
		return Member{}, false
	}
	if name := pickMemberField(fields["name"], members); name != nil {
		m.Name, _ = name.Value.(string)
	}
	if rev := pickMemberField(fields["revoked"], members); rev != nil {
		if rev.Value == true {
			m.Revoked, m.RevokedAt, m.By = true, rev.ID.Time, rev.ID.Writer
		}
	}
	return m, true
}

// Members lists the network's members by id (nil in an open network).
func (s *Store) Members(ctx context.Context) ([]Member, error) {
	if s.opts.Trust == nil {
		return nil, nil
	}
	m, err := s.members(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Member, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[id])
	}
	return out, nil
}

// Member returns what the network says of one peer: ok is false when it is
// not a member. In an open network every peer is a member.
func (s *Store) Member(ctx context.Context, id string) (Member, bool, error) {
	if s.opts.Trust == nil {
		return Member{ID: id}, true, nil
	}
	m, err := s.members(ctx)
	if err != nil {
		return Member{}, false, err
	}
	mem, ok := m[id]
	return mem, ok, nil
}

// IsCurrentMember reports whether a peer is a member and not revoked (the
// network layer asks it of every peer that connects or sends something).
func (s *Store) IsCurrentMember(ctx context.Context, id string) bool {
	m, ok, err := s.Member(ctx, id)
	return err == nil && ok && !m.Revoked
}

// AddMember records a peer as a member with a name and role (re-adding a
// revoked peer enrols it again). Only an office member may.
func (s *Store) AddMember(ctx context.Context, id, name, role string) error {
	if role != RoleOffice && role != RoleLaptop {
		return fmt.Errorf("add member: role %q: want %s or %s", role, RoleOffice, RoleLaptop)
	}
	if id == "" || strings.Contains(id, "/") {
		return fmt.Errorf("add member: bad peer id %q", id)
	}
	fields := map[string]any{"name": name, "role": role}
	if m, ok, err := s.Member(ctx, id); err != nil {
		return err
	} else if ok && m.Revoked {
		fields["revoked"] = false
	}
	return s.writeMembership(ctx, id, fields)
}

// RevokeMember revokes a member: its operations newer than this one are
// ignored everywhere. The founder cannot be revoked.
func (s *Store) RevokeMember(ctx context.Context, id string) error {
	if s.opts.Trust != nil && id == s.opts.Trust.Founder {
		return fmt.Errorf("revoke %s: %w: the founding office cannot be revoked", id, ErrForbidden)
	}
	m, ok, err := s.Member(ctx, id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("revoke %s: %w", id, ErrNotFound)
	}
	if m.Revoked {
		return nil
	}
	return s.writeMembership(ctx, id, map[string]any{"revoked": true})
}

func (s *Store) writeMembership(ctx context.Context, id string, fields map[string]any) error {
	if s.opts.Trust == nil {
		return errors.New("this network has no membership (no founder configured)")
	}
	if err := s.checkWritable(ctx, MembersCollection, ""); err != nil {
		return err
	}
	eid, err := EscapeID(id)
	if err != nil {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cur, err := s.readRecord(ctx, MembersCollection, eid)
	if err != nil {
		return fmt.Errorf("membership of %s: %w", id, err)
	}
	if _, err := s.writeRecord(ctx, MembersCollection, eid, cur, fields, newestRules); err != nil {
		return fmt.Errorf("membership of %s: %w", id, err)
	}
	s.membersStale.Store(true)
	return nil
}

// checkWritable refuses, with a clear error, a write this node's role may
// not make: every node would ignore it. Its own _nodes record is always
// writable (a node describes itself before it hears of its membership).
func (s *Store) checkWritable(ctx context.Context, collection, eid string) error {
	if err := s.checkInChannel(ctx, collection); err != nil {
		return err
	}
	if s.opts.Trust == nil {
		return nil
	}
	if collection == NodesCollection {
		if own, _ := EscapeID(s.opts.Writer); own == eid {
			return nil
		}
		return fmt.Errorf("%s: %w: a node may only describe itself", collection, ErrForbidden)
	}
	m, ok, err := s.Member(ctx, s.opts.Writer)
	if err != nil {
		return err
	}
	switch {
	case !ok:
		return fmt.Errorf("%w yet: wait until it has synced with the office that enrolled it", ErrNotMember)
	case m.Revoked:
		return fmt.Errorf("%w: it was revoked", ErrNotMember)
	}
	var writers []string
	switch collection {
	case MembersCollection, SchemaCollection, LostCollection, GrantsCollection, ChannelsCollection:
		writers = []string{RoleOffice}
	default:
		sc, err := s.Schema(ctx)
		if err != nil {
			return err
		}
		if c := sc.Collections[collection]; c != nil {
			writers = c.Writers
		}
	}
	if len(writers) > 0 && !slices.Contains(writers, m.Role) {
		what := "collection " + collection
		switch collection {
		case MembersCollection:
			what = "the membership"
		case SchemaCollection:
			what = "the schema"
		case LostCollection:
			what = "the list of lost blocks"
		case GrantsCollection:
			return fmt.Errorf("%w: only an office grants channels (this node is a %s)", ErrForbidden, m.Role)
		case ChannelsCollection:
			what = "the list of channels"
		}
		return fmt.Errorf("%w: a %s node may not change %s (writers: %s)", ErrForbidden, m.Role, what, strings.Join(writers, ", "))
	}
	return s.checkGranted(ctx, m, collection)
}
