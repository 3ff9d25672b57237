package gui

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ferry-crm/ferry/node/apijson"
)

// fakeAPI is a node's local API with canned answers; it records the
// requests that change something.
type fakeAPI struct {
	mu      sync.Mutex
	status  apijson.Status
	calls   []string // "POST /v1/offline", ...
	bodies  []string
	mux     *http.ServeMux
	records []apijson.Record
}

func newFakeAPI() *fakeAPI {
	f := &fakeAPI{mux: http.NewServeMux()}
	f.status = apijson.Status{PeerID: "12D3KooWOffice0000000000000000000000000000000000000", Name: "office-secret-name", Role: "office",
		Running: true, Online: true, ConnectedPeers: 1, Digest: "d1gest", Unacked: &apijson.Unacked{Known: true}}
	js := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	f.mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		js(w, f.status)
	})
	f.mux.HandleFunc("GET /v1/peers", func(w http.ResponseWriter, _ *http.Request) {
		js(w, []apijson.PeerInfo{{ID: "12D3KooWLaptop000000000000000000000000000000000000", Name: "laptop-anna", Role: "laptop",
			Connected: true, LastSync: time.Date(2026, 3, 4, 10, 42, 0, 0, time.Local)}})
	})
	f.mux.HandleFunc("GET /v1/sync", func(w http.ResponseWriter, _ *http.Request) { js(w, apijson.SyncState{Online: true}) })
	f.mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, _ *http.Request) { js(w, []apijson.Member{}) })
	f.mux.HandleFunc("GET /v1/conflicts", func(w http.ResponseWriter, _ *http.Request) {
		js(w, []apijson.Conflict{{Collection: "contacts", ID: "c1", Field: "phone", Policy: "manual", Open: true,
			Candidates: []apijson.Candidate{
				{N: 1, Value: "+41-1", Writer: "w1", WriterName: "laptop-anna", Op: "w1.1"},
				{N: 2, Value: "+41-2", Writer: "w2", WriterName: "office-secret-name", Op: "w2.1"}}}})
	})
	f.mux.HandleFunc("GET /v1/schema", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"collections":{"contacts":{"fields":{"last_name":{"type":"string","required":true},"phone":{"type":"string"}}}}}`)
	})
	f.mux.HandleFunc("GET /v1/records/{collection}", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, r := range f.records {
			b, _ := json.Marshal(r)
			w.Write(append(b, '\n'))
		}
	})
	for _, p := range []string{"POST /v1/offline", "POST /v1/online", "POST /v1/sync", "POST /v1/resolve/{c}/{id}/{f}", "POST /v1/invites", "POST /v1/members/{m}/revoke"} {
		f.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			f.mu.Lock()
			f.calls = append(f.calls, r.Method+" "+r.URL.Path)
			f.bodies = append(f.bodies, string(body))
			if strings.HasSuffix(r.URL.Path, "/offline") {
				f.status.Online = false
			}
			f.mu.Unlock()
			js(w, map[string]any{})
		})
	}
	return f
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) { f.mux.ServeHTTP(w, r) }

func (f *fakeAPI) called() ([]string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...), append([]string(nil), f.bodies...)
}

func (f *fakeAPI) setStatus(fn func(*apijson.Status)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.status)
}
