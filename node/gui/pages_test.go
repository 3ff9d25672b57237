package gui

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/ferry-crm/ferry/node/apijson"
)

func TestGUIRecordsSearchAndPages(t *testing.T) {
	ts := startTest(t)
	for i := 1; i <= 120; i++ {
		name := "Smith"
		if i%3 == 0 {
			name = "Keller"
		}
		ts.api.records = append(ts.api.records, apijson.Record{Collection: "contacts", ID: fmt.Sprintf("c%03d", i),
			Fields: map[string]any{"last_name": name, "phone": fmt.Sprintf("+41-%d", i)}})
	}
	c := ts.login()
	resp, body := ts.do("GET", "/records/contacts", nil, withCookie(c))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "1–50 of 120 records") || !strings.Contains(body, "Page 1 of 3") ||
		!strings.Contains(body, `href="/records/contacts/c001"`) || strings.Contains(body, `c051"`) {
		t.Errorf("first page of contacts: %d\n%s", resp.StatusCode, body)
	}
	// The search: case-insensitive, on field values; its one page shown
	// for a page past it.
	_, body = ts.do("GET", "/records/contacts?q=keller&page=2", nil, withCookie(c))
	if !strings.Contains(body, "1–40 of 40 records matching “keller”") || !strings.Contains(body, `href="/records/contacts/c120"`) {
		t.Errorf("the search keller:\n%s", body)
	}
	if strings.Contains(body, "Smith") {
		t.Errorf("the search keller lists a Smith:\n%s", body)
	}
	// A page past the end shows the last one; an unknown collection is an
	// error in words.
	_, body = ts.do("GET", "/records/contacts?page=99", nil, withCookie(c))
	if !strings.Contains(body, "Page 3 of 3") {
		t.Errorf("page 99: want the last page:\n%s", body)
	}
	resp, body = ts.do("GET", "/records/nope", nil, withCookie(c))
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "There is no collection") {
		t.Errorf("an unknown collection: %d\n%s", resp.StatusCode, body)
	}
}

func TestGUIOverviewShowsChannels(t *testing.T) {
	ts := startTest(t)
	c := ts.login()
	_, body := ts.do("GET", "/", nil, withCookie(c))
	if strings.Contains(body, `id="channels"`) {
		t.Errorf("channels shown without any:\n%s", body)
	}
	ts.api.mu.Lock()
	ts.api.status.Role = "laptop"
	ts.api.status.Channels = []string{"east"}
	ts.api.status.ChannelsNotTaken = []string{"north"}
	ts.api.status.ChannelsLeaving = []string{"west"}
	ts.api.mu.Unlock()
	_, body = ts.do("GET", "/", nil, withCookie(c))
	for _, want := range []string{"Taken offline: <strong>east</strong>", "Granted, not taken offline: north", "then removed from this computer: west"} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %q:\n%s", want, body)
		}
	}
}
