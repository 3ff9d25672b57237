package enrol

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/crdt"
)

// FuzzInviteToken: a token is pasted by a person; any text gives a token
// that passes every check, or an error wrapping ErrBadToken, never a panic.
func FuzzInviteToken(f *testing.F) {
	good := Token{SwarmKey: strings.Repeat("ab", 32), Founder: "12D3KooWJ8FpH8FxyuCkTT2uYqjMHUjVQm868ka1ZnG52peVYWq2",
		Topic: "ferry", Office: "12D3KooWJ8FpH8FxyuCkTT2uYqjMHUjVQm868ka1ZnG52peVYWq2",
		Addrs:  []string{"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWJ8FpH8FxyuCkTT2uYqjMHUjVQm868ka1ZnG52peVYWq2"},
		Secret: strings.Repeat("01", 32), Name: "lap", Role: crdt.RoleLaptop}
	f.Add(good.Encode())
	f.Add(tokenPrefix)
	f.Add(tokenPrefix + "e30")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrBadToken) {
				t.Fatalf("error %v does not wrap ErrBadToken", err)
			}
			return
		}
		if _, err := tok.PSK(); err != nil || len(tok.OfficeAddrs()) != len(tok.Addrs) {
			t.Fatalf("accepted token %+v: psk %v, addrs %v", tok, err, tok.OfficeAddrs())
		}
		if again, err := ParseToken(tok.Encode()); err != nil || again.Secret != tok.Secret {
			t.Fatalf("re-encoded token does not parse back: %v", err)
		}
	})
}

// FuzzJoinFrames: the JSON frames of /ferry/join/1.0.0 as a peer may send
// them: decoding never panics.
func FuzzJoinFrames(f *testing.F) {
	f.Add([]byte(`{"secret":"00","name":"x"}`))
	f.Add([]byte(`{"error":"no"}`))
	f.Add([]byte(`{"name":"n","role":"office"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var jr joinRequest
		_ = json.Unmarshal(data, &jr)
		var rep joinReply
		_ = json.Unmarshal(data, &rep)
	})
}
