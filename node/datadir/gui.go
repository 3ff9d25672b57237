package datadir

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// GUI is the YAML form of the web page's settings (key gui of
// config.yaml): `gui: {listen: 127.0.0.1:8384}`, or `gui: off`. Without
// the key the page is on, at its default address. The address is kept as
// written: package gui checks it (loopback only).
type GUI struct {
	// Listen is host:port on a loopback address ("" for the default).
	Listen string `yaml:"listen,omitempty"`
	// Off: no web page.
	Off bool `yaml:"-"`
}

// UnmarshalYAML reads `off` (or false, no), `on` (true, yes) or a mapping
// with listen; `listen: off` is off too.
func (g *GUI) UnmarshalYAML(v *yaml.Node) error {
	switch v.Kind {
	case yaml.ScalarNode:
		switch strings.ToLower(v.Value) {
		case "off", "false", "no":
			*g = GUI{Off: true}
			return nil
		case "on", "true", "yes", "":
			*g = GUI{}
			return nil
		}
		return fmt.Errorf("line %d: gui: %q: want off, on or {listen: 127.0.0.1:PORT}", v.Line, v.Value)
	case yaml.MappingNode:
		var m struct {
			Listen string `yaml:"listen"`
		}
		if err := v.Decode(&m); err != nil {
			return fmt.Errorf("gui: %w", err)
		}
		*g = GUI{Listen: m.Listen}
		if strings.EqualFold(m.Listen, "off") {
			*g = GUI{Off: true}
		}
		return nil
	}
	return fmt.Errorf("line %d: gui: want off, on or {listen: 127.0.0.1:PORT}", v.Line)
}

// MarshalYAML writes off as `gui: off`, anything else as a mapping.
func (g GUI) MarshalYAML() (any, error) {
	if g.Off {
		return "off", nil
	}
	return struct {
		Listen string `yaml:"listen,omitempty"`
	}{g.Listen}, nil
}
