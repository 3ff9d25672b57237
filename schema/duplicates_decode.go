package schema

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

var duplicateKeys = []string{"fields", "normalize"}

// decodeDuplicates decodes a collection's duplicates: a list of rules, each
// {fields: [a, b], normalize: phone}.
func decodeDuplicates(n *yaml.Node, cname string) ([]DuplicateRule, error) {
	where := fmt.Sprintf("collection %q, duplicates", cname)
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("line %d: %s must be a list of rules like {fields: [email]}, got %s", n.Line, where, describeNode(n))
	}
	var out []DuplicateRule
	for i, item := range n.Content {
		w := fmt.Sprintf("%s, rule %d", where, i+1)
		if item.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("line %d: %s must be a mapping like {fields: [email]}, got %s", item.Line, w, describeNode(item))
		}
		var r DuplicateRule
		err := walkMapping(item, w, duplicateKeys, func(key string, k, v *yaml.Node) error {
			var err error
			switch key {
			case "fields":
				if v.Kind == yaml.ScalarNode && !isNull(v) {
					r.Fields = []string{v.Value}
				} else {
					r.Fields, err = stringList(v, w, key)
				}
			case "normalize":
				r.Normalize, err = scalarString(v, w, key)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// duplicatesNode renders a collection's duplicate rules.
func duplicatesNode(rules []DuplicateRule) *yaml.Node {
	seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	for _, r := range rules {
		m := mappingNode()
		m.Style = yaml.FlowStyle
		fs := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
		for _, f := range r.Fields {
			fs.Content = append(fs.Content, strNode(f))
		}
		m.Content = append(m.Content, strNode("fields"), fs)
		if r.Normalize != "" {
			m.Content = append(m.Content, strNode("normalize"), strNode(r.Normalize))
		}
		seq.Content = append(seq.Content, m)
	}
	return seq
}
