package node_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/ferry-crm/ferry/crdt"
	"github.com/ferry-crm/ferry/node"
	"github.com/ferry-crm/ferry/schema"
)

// A Go program embedding Ferry: it makes a data dir (as `ferry init`
// does), opens it without the network, writes and reads records, watches
// changes and reads the node's status. With OpenOptions{Network: true}
// the same node replicates with its peers, as `ferry node` does; to talk
// to a node already running in a data dir, use api.Dial instead.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ferry-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	if _, _, err := node.Init(dir, node.InitOptions{Name: "johns-laptop"}); err != nil {
		log.Fatal(err)
	}
	n, err := node.Open(ctx, dir, node.OpenOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()

	sc, err := schema.Parse([]byte(`
collections:
  contacts:
    fields:
      first_name: {type: string}
      last_name:  {type: string, required: true}
      email:      {type: string, unique: true}
`))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := n.Store().ApplySchema(ctx, sc); err != nil {
		log.Fatal(err)
	}

	watch, stop := context.WithCancel(ctx)
	defer stop()
	changes := n.Watch(watch)

	store := n.Store()
	if _, err := store.Put(ctx, "contacts", "c1", map[string]any{"first_name": "John", "last_name": "Rodman"}); err != nil {
		log.Fatal(err)
	}
	c := <-changes
	rec, err := store.Get(ctx, c.Collection, c.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.Collection, c.ID, rec.Values()["first_name"], rec.Values()["last_name"])

	// A unique field refuses a value another record holds.
	_, _ = store.Put(ctx, "contacts", "c1", map[string]any{"email": "john@example.com"})
	_, err = store.Put(ctx, "contacts", "c2", map[string]any{"last_name": "Other", "email": "john@example.com"})
	fmt.Println("duplicate email refused:", err != nil)

	var open int
	_ = store.Conflicts(ctx, nil, func(crdt.Conflict) error { open++; return nil })
	fmt.Println("conflicts:", open)

	st := n.Status(ctx)
	fmt.Println("role:", st.Role, "running:", st.Running)
	// Output:
	// contacts c1 John Rodman
	// duplicate email refused: true
	// conflicts: 0
	// role: laptop running: false
}
