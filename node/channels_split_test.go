package node

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ferry-crm/ferry/internal/ondisk"
	"github.com/ferry-crm/ferry/internal/testnet"
)

// TestRecordCreatedInTwoChannelsIsJoined: two laptops, each granted one
// channel, create a record with the same id in their own channel (neither
// can see the other's copy). The office joins the copies: one record, with
// the fields of both, in the channel its routing value names (the newest
// write's); the other channel hides it, and no node shows it twice.
func TestRecordCreatedInTwoChannelsIsJoined(t *testing.T) {
	ctx := context.Background()
	c := newClusterWith(t, 3, channelSchema, nil)
	office, east, west, both := c.nodes[0], c.nodes[1], c.nodes[2], c.nodes[3]
	grant(t, c, 1, "east")
	grant(t, c, 2, "west")
	grant(t, c, 3, "east", "west")
	testnet.WaitFor(t, 60*time.Second, func() bool {
		return east.Store().Channel("east") != nil && west.Store().Channel("west") != nil &&
			both.Store().Channel("east") != nil && both.Store().Channel("west") != nil
	})

	put(t, east, "k7", map[string]any{"last_name": "Kim", "territory": "east", "phone": "555-east"})
	west.clock.Set(west.clock.Now().Add(time.Minute)) // west's territory is the newest
	put(t, west, "k7", map[string]any{"last_name": "Kim", "territory": "west", "first_name": "Jo"})

	testnet.WaitFor(t, 60*time.Second, func() bool {
		for _, n := range []*clusterNode{office, west, both} {
			if fieldOn(t, n, "contacts", "k7", "phone") != "555-east" || fieldOn(t, n, "contacts", "k7", "first_name") != "Jo" ||
				fieldOn(t, n, "contacts", "k7", "territory") != "west" {
				return false
			}
		}
		return !holds(east, "k7")
	})
	if !c.officeLog.Has(slog.LevelInfo, "joined a record created in two channels") {
		t.Error("the office did not join the copies: they met another way")
	}
	// One copy shown, at home in west; east hides it.
	for _, n := range []*clusterNode{office, both} {
		if k := countListed(t, n, "k7"); k != 1 {
			t.Errorf("%s lists k7 %d times", n.cfg.Name, k)
		}
		if _, err := n.Store().Channel("east").Get(ctx, "contacts", "k7"); err == nil {
			t.Errorf("%s: channel east still shows k7", n.cfg.Name)
		}
	}
	var split []string
	if err := office.Store().SplitRecords(ctx, func(_, id string, chans []string) error {
		split = append(split, id)
		return nil
	}); err != nil || len(split) > 0 {
		t.Errorf("records still in two channels on the office: %v (%v)", split, err)
	}
}

// filesHolding returns the files under dir whose bytes contain s.
func filesHolding(t *testing.T, dir, s string) []string {
	t.Helper()
	found, err := ondisk.FilesHolding(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	return found
}
