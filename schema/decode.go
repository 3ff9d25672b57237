package schema

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The keys allowed at each level of a schema file.
var (
	rootKeys       = []string{"collections"}
	collectionKeys = []string{"policy", "writers", "fields", "duplicates", "channel"}
	fieldKeys      = []string{"type", "required", "unique", "values", "to", "policy", "aliases"}
)

// decode reads a schema file strictly, by walking the YAML node tree so that
// errors can name the line, collection and field they concern. It does not
// validate names, types or references; Validate does.
func decode(data []byte) (*Schema, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty document (want a mapping with a collections key)")
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		if extra.Kind != 0 && !(len(extra.Content) == 1 && isNull(extra.Content[0])) {
			return nil, fmt.Errorf("line %d: more than one YAML document", extra.Line)
		}
	} else if !errors.Is(err, io.EOF) {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("empty document (want a mapping with a collections key)")
	}
	root := doc.Content[0]
	s := &Schema{}
	found := false
	err := walkMapping(root, "schema", rootKeys, func(key string, k, v *yaml.Node) error {
		found = true
		cols, err := decodeCollections(v)
		s.Collections = cols
		return err
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("line %d: schema: missing key collections", root.Line)
	}
	return s, nil
}

func decodeCollections(n *yaml.Node) (map[string]*Collection, error) {
	cols := make(map[string]*Collection)
	err := walkMapping(n, "collections", nil, func(name string, k, v *yaml.Node) error {
		if isNull(v) {
			cols[name] = nil
			return nil
		}
		c := &Collection{Name: name}
		cols[name] = c
		where := fmt.Sprintf("collection %q", name)
		return walkMapping(v, where, collectionKeys, func(key string, k, v *yaml.Node) error {
			var err error
			switch key {
			case "policy":
				c.Policy, err = scalarString(v, where, key)
			case "writers":
				// One role (writers: office) or a list of roles.
				if v.Kind == yaml.ScalarNode {
					var w string
					w, err = scalarString(v, where, key)
					c.Writers = []string{w}
				} else {
					c.Writers, err = stringList(v, where, key)
				}
			case "fields":
				c.Fields, err = decodeFields(v, name)
			case "duplicates":
				c.Duplicates, err = decodeDuplicates(v, name)
			case "channel":
				c.Channel, err = decodeRouting(v, name)
			}
			return err
		})
	})
	return cols, err
}

func decodeFields(n *yaml.Node, cname string) (map[string]*Field, error) {
	fields := make(map[string]*Field)
	err := walkMapping(n, fmt.Sprintf("collection %q, fields", cname), nil, func(name string, k, v *yaml.Node) error {
		if isNull(v) {
			fields[name] = nil
			return nil
		}
		f := &Field{}
		fields[name] = f
		where := fmt.Sprintf("collection %q, field %q", cname, name)
		return walkMapping(v, where, fieldKeys, func(key string, k, v *yaml.Node) error {
			var err error
			switch key {
			case "type":
				var t string
				t, err = scalarString(v, where, key)
				f.Type = Type(t)
			case "required":
				f.Required, err = scalarBool(v, where, key)
			case "unique":
				f.Unique, err = scalarBool(v, where, key)
			case "values":
				f.Values, err = stringList(v, where, key)
			case "to":
				f.To, err = scalarString(v, where, key)
			case "policy":
				f.Policy, err = scalarString(v, where, key)
			case "aliases":
				// One alias (aliases: Last Name) or a list of aliases.
				if v.Kind == yaml.ScalarNode && !isNull(v) {
					f.Aliases = []string{v.Value}
				} else {
					f.Aliases, err = stringList(v, where, key)
				}
			}
			return err
		})
	})
	return fields, err
}

// walkMapping calls fn for each key of mapping n in order. If allowed is
// not nil, other keys are errors. Duplicate keys, non-scalar keys and
// aliases are errors. where describes n for error messages.
func walkMapping(n *yaml.Node, where string, allowed []string, fn func(key string, k, v *yaml.Node) error) error {
	if err := noAlias(n, where); err != nil {
		return err
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: %s: want a mapping, got %s", n.Line, where, describeNode(n))
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if err := noAlias(k, where); err != nil {
			return err
		}
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: %s: keys must be strings, got %s", k.Line, where, describeNode(k))
		}
		key := k.Value
		if allowed != nil && !slices.Contains(allowed, key) {
			return fmt.Errorf("line %d: %s: unknown key %q (want one of %s)", k.Line, where, key, strings.Join(allowed, ", "))
		}
		if seen[key] {
			return fmt.Errorf("line %d: %s: duplicate key %q", k.Line, where, key)
		}
		seen[key] = true
		if err := noAlias(v, where); err != nil {
			return err
		}
		if err := fn(key, k, v); err != nil {
			return err
		}
	}
	return nil
}

func noAlias(n *yaml.Node, where string) error {
	if n.Kind == yaml.AliasNode {
		return fmt.Errorf("line %d: %s: YAML aliases are not supported", n.Line, where)
	}
	return nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	default:
		return "nothing"
	}
}

// scalarString reads a scalar as a string; null reads as "".
func scalarString(n *yaml.Node, where, key string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", fmt.Errorf("line %d: %s: %s must be a string, got %s", n.Line, where, key, describeNode(n))
	}
	if isNull(n) {
		return "", nil
	}
	return n.Value, nil
}

// scalarBool reads a scalar as a bool; null reads as false.
func scalarBool(n *yaml.Node, where, key string) (bool, error) {
	if n.Kind == yaml.ScalarNode && isNull(n) {
		return false, nil
	}
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		return false, fmt.Errorf("line %d: %s: %s must be true or false, got %s", n.Line, where, key, describeNode(n))
	}
	return b, nil
}

// stringList reads a list of non-null scalars as strings; null and the empty
// list read as nil.
func stringList(n *yaml.Node, where, key string) ([]string, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("line %d: %s: %s must be a list of strings, got %s", n.Line, where, key, describeNode(n))
	}
	var out []string
	for _, item := range n.Content {
		if err := noAlias(item, where); err != nil {
			return nil, err
		}
		if item.Kind != yaml.ScalarNode || isNull(item) {
			return nil, fmt.Errorf("line %d: %s: %s must be a list of strings, got an item %s", item.Line, where, key, describeNode(item))
		}
		out = append(out, item.Value)
	}
	return out, nil
}

// YAML renders the schema as YAML that Parse reads back to an equal schema.
// The output is deterministic: collections and fields are sorted by name and
// each field is written on one line in flow style, as in
//
//	name: {type: string, required: true}
func (s *Schema) YAML() ([]byte, error) {
	if s == nil {
		return nil, errors.New("render schema: no schema")
	}
	cols := mappingNode()
	for _, cname := range s.Names() {
		c := s.Collections[cname]
		cols.Content = append(cols.Content, strNode(cname))
		if c == nil {
			cols.Content = append(cols.Content, nullNode())
			continue
		}
		cn := mappingNode()
		if c.Policy != "" {
			cn.Content = append(cn.Content, strNode("policy"), strNode(c.Policy))
		}
		if len(c.Writers) > 0 {
			seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
			for _, w := range c.Writers {
				seq.Content = append(seq.Content, strNode(w))
			}
			cn.Content = append(cn.Content, strNode("writers"), seq)
		}
		fields := mappingNode()
		for _, fname := range c.FieldNames() {
			fields.Content = append(fields.Content, strNode(fname), fieldNode(c.Fields[fname]))
		}
		cn.Content = append(cn.Content, strNode("fields"), fields)
		if len(c.Duplicates) > 0 {
			cn.Content = append(cn.Content, strNode("duplicates"), duplicatesNode(c.Duplicates))
		}
		if c.Channel != nil {
			cn.Content = append(cn.Content, strNode("channel"), routingNode(c.Channel))
		}
		cols.Content = append(cols.Content, cn)
	}
	root := mappingNode()
	root.Content = append(root.Content, strNode("collections"), cols)

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("render schema: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render schema: %w", err)
	}
	return buf.Bytes(), nil
}

func fieldNode(f *Field) *yaml.Node {
	if f == nil {
		return nullNode()
	}
	n := mappingNode()
	n.Style = yaml.FlowStyle
	n.Content = append(n.Content, strNode("type"), strNode(string(f.Type)))
	if f.Required {
		n.Content = append(n.Content, strNode("required"), boolNode(true))
	}
	if f.Unique {
		n.Content = append(n.Content, strNode("unique"), boolNode(true))
	}
	if len(f.Values) > 0 {
		seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
		for _, v := range f.Values {
			seq.Content = append(seq.Content, strNode(v))
		}
		n.Content = append(n.Content, strNode("values"), seq)
	}
	if f.To != "" {
		n.Content = append(n.Content, strNode("to"), strNode(f.To))
	}
	if f.Policy != "" {
		n.Content = append(n.Content, strNode("policy"), strNode(f.Policy))
	}
	if len(f.Aliases) > 0 {
		seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
		for _, a := range f.Aliases {
			seq.Content = append(seq.Content, strNode(a))
		}
		n.Content = append(n.Content, strNode("aliases"), seq)
	}
	return n
}

func mappingNode() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"} }
func nullNode() *yaml.Node    { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"} }

// strNode returns a string scalar, quoted where a YAML 1.1 reader would
// otherwise take it for something else (yaml.v3's choice of style), and never
// in block style so that it can go inside a flow collection.
func strNode(s string) *yaml.Node {
	var n yaml.Node
	if err := n.Encode(s); err != nil || n.Kind != yaml.ScalarNode || n.Value != s {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.DoubleQuotedStyle}
	}
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		n.Style = yaml.DoubleQuotedStyle
	}
	return &n
}
func boolNode(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(b)}
}
