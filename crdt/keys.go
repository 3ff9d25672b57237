package crdt

import (
	"errors"
	"fmt"
	"strings"

	ds "github.com/ipfs/go-datastore"
)

// Reserved names. User collections and fields start with a letter (see
// schema), so names starting with an underscore cannot clash with them.
const (
	// DeleteField is the pseudo-field holding record delete operations.
	DeleteField = "_del"
	// SchemaCollection holds the replicated schema: one record per
	// collection, one field per schema field, the value its definition.
	SchemaCollection = "_schema"
	// CollectionSettingsField is the schema record field holding a
	// collection's own settings (its policy).
	CollectionSettingsField = "_collection"
	// NodesCollection holds what each node says about itself (name, role).
	NodesCollection = "_nodes"
)

// EscapeID turns any record id into a single datastore key segment: bytes
// outside [A-Za-z0-9_-] are written as %XX. The empty id is refused.
func EscapeID(id string) (string, error) {
	if id == "" {
		return "", errors.New("record id is empty")
	}
	if len(id) > 512 {
		return "", fmt.Errorf("record id %q... is longer than 512 bytes", id[:32])
	}
	var b strings.Builder
	b.Grow(len(id))
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String(), nil
}

// UnescapeID reverses EscapeID.
func UnescapeID(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("unescape id %q: truncated escape", s)
		}
		var c byte
		if _, err := fmt.Sscanf(s[i+1:i+3], "%02X", &c); err != nil {
			return "", fmt.Errorf("unescape id %q: %w", s, err)
		}
		b.WriteByte(c)
		i += 2
	}
	return b.String(), nil
}

// OpID names one operation: its timestamp and its writer.
type OpID struct {
	Time   Timestamp
	Writer string
}

// String renders the id as "<16 hex digits>-<writer>".
func (o OpID) String() string { return o.Time.String() + "-" + o.Writer }

// Newer reports whether o orders after p: later timestamp, ties broken by
// the larger writer id. Every replica orders operations the same way.
func (o OpID) Newer(p OpID) bool {
	if o.Time != p.Time {
		return o.Time > p.Time
	}
	return o.Writer > p.Writer
}

// ParseOpID parses the form produced by OpID.String.
func ParseOpID(s string) (OpID, error) {
	if len(s) < 18 || s[16] != '-' {
		return OpID{}, fmt.Errorf("parse op id %q: want <16 hex>-<writer>", s)
	}
	t, err := ParseTimestamp(s[:16])
	if err != nil {
		return OpID{}, fmt.Errorf("parse op id: %w", err)
	}
	return OpID{Time: t, Writer: s[17:]}, nil
}

// recordPrefix is the key prefix of every operation of one record.
func recordPrefix(collection, escapedID string) ds.Key {
	return ds.RawKey("/" + collection + "/" + escapedID)
}

// collectionPrefix is the key prefix of every operation of a collection.
func collectionPrefix(collection string) ds.Key {
	return ds.RawKey("/" + collection)
}

// writeKey is the key of one write of one record: the element go-ds-crdt
// stores it as.
func writeKey(collection, escapedID string, id OpID) ds.Key {
	return ds.RawKey("/" + collection + "/" + escapedID + "/" + id.String())
}

// keyParts is a parsed write key.
type keyParts struct {
	Collection string
	EscapedID  string
	Op         OpID
}

// parseOpKey splits "/<collection>/<escaped id>/<op id>".
func parseOpKey(k string) (keyParts, error) {
	parts := strings.Split(strings.TrimPrefix(k, "/"), "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return keyParts{}, fmt.Errorf("parse key %q: want /collection/id/op", k)
	}
	op, err := ParseOpID(parts[2])
	if err != nil {
		return keyParts{}, fmt.Errorf("parse key %q: %w", k, err)
	}
	return keyParts{Collection: parts[0], EscapedID: parts[1], Op: op}, nil
}
