package schema

import (
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Routing puts each record of a collection in a channel by the value of
// one of its fields (issue 14, docs/design/channels.md): with
// `channel: {field: territory}`, a record whose territory is "east" is in
// channel east, and only nodes granted east hold it. A collection without
// routing goes to every node, as do Ferry's own collections.
type Routing struct {
	// Field is the routing field: a string or enum field of the
	// collection.
	Field string `json:"field" yaml:"field"`
	// Default is the channel of a record without a value for Field
	// (DefaultChannel when empty).
	Default string `json:"default,omitempty" yaml:"default,omitempty"`
}

// DefaultChannel is the channel of a record whose routing field has no
// value, unless the collection's routing names another.
const DefaultChannel = "unassigned"

// channelPattern: channel names become key segments and protocol ids, so
// they are plain: lowercase letters, digits and dashes.
var channelPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// CheckChannelName returns an error saying why name cannot be a channel.
func CheckChannelName(name string) error {
	if !channelPattern.MatchString(name) {
		return fmt.Errorf("bad channel name %q: want a lowercase letter or digit, then up to 62 lowercase letters, digits or dashes", name)
	}
	return nil
}

// ChannelOf returns the channel of a record of c with these values (nil
// when c is not routed: it goes to every node). A value of the routing
// field that is not a valid channel name is an error.
func (c *Collection) ChannelOf(values map[string]any) (string, error) {
	r := c.Channel
	if r == nil {
		return "", nil
	}
	v, ok := values[r.Field]
	if !ok || v == nil || v == "" {
		if r.Default != "" {
			return r.Default, nil
		}
		return DefaultChannel, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("collection %q: routing field %q holds %T, not a channel name", c.Name, r.Field, v)
	}
	if err := CheckChannelName(s); err != nil {
		return "", fmt.Errorf("collection %q: field %q routes the record to a channel: %w", c.Name, r.Field, err)
	}
	return s, nil
}

// routingProblems lists what is wrong with the routing of c.
func (c *Collection) routingProblems() []string {
	r := c.Channel
	if r == nil {
		return nil
	}
	where := fmt.Sprintf("collection %q, channel", c.Name)
	var out []string
	f := c.Fields[r.Field]
	switch {
	case r.Field == "":
		out = append(out, where+": field: name the field whose value is the record's channel")
	case f == nil:
		out = append(out, fmt.Sprintf("%s: unknown field %q (the collection has %s)", where, r.Field, strings.Join(c.FieldNames(), ", ")))
	case f.Type != TypeString && f.Type != TypeEnum:
		out = append(out, fmt.Sprintf("%s: field %q is %s: a channel is named by a string or enum field", where, r.Field, f.Type))
	case f.Type == TypeEnum:
		for _, v := range f.Values {
			if err := CheckChannelName(v); err != nil {
				out = append(out, fmt.Sprintf("%s: enum value of %q: %v", where, r.Field, err))
			}
		}
	}
	if r.Default != "" {
		if err := CheckChannelName(r.Default); err != nil {
			out = append(out, fmt.Sprintf("%s: default: %v", where, err))
		}
	}
	return out
}

// routingChanges lists the destructive routing changes of a collection: a
// record's channel is part of where it lives, so routing is set when the
// collection is created and never changed.
func routingChanges(cname string, oc, nc *Collection) []string {
	switch {
	case oc.Channel == nil && nc.Channel == nil:
		return nil
	case oc.Channel == nil:
		return []string{cname + ": channel routing added to an existing collection"}
	case nc.Channel == nil:
		return []string{fmt.Sprintf("%s: channel routing by %q removed", cname, oc.Channel.Field)}
	case *oc.Channel != *nc.Channel:
		return []string{fmt.Sprintf("%s: channel routing changed (%s -> %s)", cname, oc.Channel, nc.Channel)}
	}
	return nil
}

// String is the routing as written in a schema.
func (r *Routing) String() string {
	if r.Default == "" {
		return fmt.Sprintf("{field: %s}", r.Field)
	}
	return fmt.Sprintf("{field: %s, default: %s}", r.Field, r.Default)
}

var routingKeys = []string{"field", "default"}

// decodeRouting decodes `channel: {field: F, default: D}` (or
// `channel: F`).
func decodeRouting(n *yaml.Node, cname string) (*Routing, error) {
	where := fmt.Sprintf("collection %q, channel", cname)
	if isNull(n) {
		return nil, nil
	}
	r := &Routing{}
	if n.Kind == yaml.ScalarNode {
		f, err := scalarString(n, fmt.Sprintf("collection %q", cname), "channel")
		r.Field = f
		return r, err
	}
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: %s must be a mapping like {field: territory}, got %s", n.Line, where, describeNode(n))
	}
	err := walkMapping(n, where, routingKeys, func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "field":
			r.Field, err = scalarString(v, where, key)
		case "default":
			r.Default, err = scalarString(v, where, key)
		}
		return err
	})
	return r, err
}

// routingNode renders a collection's routing.
func routingNode(r *Routing) *yaml.Node {
	m := mappingNode()
	m.Style = yaml.FlowStyle
	m.Content = append(m.Content, strNode("field"), strNode(r.Field))
	if r.Default != "" {
		m.Content = append(m.Content, strNode("default"), strNode(r.Default))
	}
	return m
}
