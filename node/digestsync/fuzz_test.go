package digestsync

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzDigestFrames: the JSON frames of /ferry/digest/1.0.0 (request and
// answer) as a peer may send them. Decoding never panics, and an accepted
// digest is exactly the hex it came from.
func FuzzDigestFrames(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"buckets":[0,255]}`))
	f.Add([]byte(`{"buckets":["` + strings.Repeat("ab", 32) + `"],"records":{"contacts/c1":"00"}}`))
	f.Add([]byte(`{"error":"no"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var req request
		_ = json.Unmarshal(data, &req)
		var resp response
		if json.Unmarshal(data, &resp) == nil {
			for _, s := range resp.Buckets {
				if d, err := parseDigest(s); err == nil && d.String() != strings.ToLower(s) {
					t.Fatalf("digest %q parsed as %s", s, d)
				}
			}
		}
	})
}
