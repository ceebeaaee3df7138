package lab

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"go.yaml.in/yaml/v3"

	"github.com/tapstack/tapstack/link"
)

// Spec is a network in text form, as `tapstack lab up FILE` reads it: a
// YAML or TOML file (ReadSpec) whose keys are the tags below. A zero field
// takes the default of the lab API (Options, LinkOptions, UplinkOptions).
// docs/lab-example.yaml is a commented example.
type Spec struct {
	Name    string       `yaml:"name" toml:"name"`       // Options.Name
	Seed    int64        `yaml:"seed" toml:"seed"`       // Options.Seed
	Capture string       `yaml:"capture" toml:"capture"` // Options.CaptureDir
	Nodes   []NodeSpec   `yaml:"nodes" toml:"nodes"`
	Links   []LinkSpec   `yaml:"links" toml:"links"`
	Uplinks []UplinkSpec `yaml:"uplinks" toml:"uplinks"`
}

// NodeSpec is a node: Kind is "host" (the default), "router" or "switch".
type NodeSpec struct {
	Name string `yaml:"name" toml:"name"`
	Kind string `yaml:"kind" toml:"kind"`
}

// LinkSpec is a link between the nodes named A and B (LinkOptions): Kind
// is "veth" (the default) or "wire"; Impair, a wire's only, is
// link.ParseImpairSpec's syntax; Subnet4, Subnet6 and the prefixes of
// Addrs (node name → its addresses on this link) are CIDR prefixes.
type LinkSpec struct {
	A       string              `yaml:"a" toml:"a"`
	B       string              `yaml:"b" toml:"b"`
	Kind    string              `yaml:"kind" toml:"kind"`
	Impair  string              `yaml:"impair" toml:"impair"`
	MTU     int                 `yaml:"mtu" toml:"mtu"`
	Subnet4 string              `yaml:"subnet4" toml:"subnet4"`
	Subnet6 string              `yaml:"subnet6" toml:"subnet6"`
	NoIPv6  bool                `yaml:"no_ipv6" toml:"no_ipv6"`
	Addrs   map[string][]string `yaml:"addrs" toml:"addrs"`
}

// UplinkSpec is a NAT uplink of the node named Node (UplinkOptions).
type UplinkSpec struct {
	Node         string `yaml:"node" toml:"node"`
	Impair       string `yaml:"impair" toml:"impair"`
	HostLoopback bool   `yaml:"host_loopback" toml:"host_loopback"`
	ResolvConf   string `yaml:"resolv_conf" toml:"resolv_conf"`
}

// SpecError is a mistake in a Spec: the file, the line when known, the
// field ("links[1].impair") when there is one.
type SpecError struct {
	File  string
	Line  int
	Field string
	Err   error
}

func (e *SpecError) Error() string {
	s := e.File
	if e.Line > 0 {
		s += ":" + strconv.Itoa(e.Line)
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	if s == "" {
		return e.Err.Error()
	}
	return s + ": " + e.Err.Error()
}

func (e *SpecError) Unwrap() error { return e.Err }

// ReadSpec reads and checks the file, YAML (.yaml, .yml) or TOML (.toml)
// by its extension.
func ReadSpec(file string) (Spec, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return Spec{}, err
	}
	return ParseSpec(file, data)
}

// ParseSpec parses and checks data, the contents of file (whose extension
// chooses the format; file also names it in errors). Unknown keys are
// errors.
func ParseSpec(file string, data []byte) (Spec, error) {
	var s Spec
	lines := map[string]int{}
	fail := func(err error, field string, line int) (Spec, error) {
		return Spec{}, &SpecError{File: file, Line: line, Field: field, Err: err}
	}
	switch ext := filepath.Ext(file); ext {
	case ".yaml", ".yml":
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&s); err != nil {
			msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "yaml: "), "unmarshal errors:\n  ")
			return fail(errors.New(msg), "", 0) // the message names the line
		}
		var root yaml.Node
		if err := yaml.Unmarshal(data, &root); err == nil {
			yamlLines(&root, "", lines)
		}
	case ".toml":
		md, err := toml.Decode(string(data), &s)
		if err != nil {
			return fail(errors.New(strings.TrimPrefix(err.Error(), "toml: ")), "", 0)
		}
		if un := md.Undecoded(); len(un) > 0 {
			return fail(errors.New("unknown key"), un[0].String(), 0)
		}
	default:
		return fail(fmt.Errorf("unknown format %q: want .yaml, .yml or .toml", ext), "", 0)
	}
	if err := s.check(); err != nil {
		var se *SpecError
		if errors.As(err, &se) {
			se.File, se.Line = file, lineOf(lines, se.Field)
		}
		return Spec{}, err
	}
	return s, nil
}

// yamlLines records the line of every value under node, by field path.
func yamlLines(node *yaml.Node, path string, lines map[string]int) {
	lines[path] = node.Line
	switch node.Kind {
	case yaml.DocumentNode:
		for _, c := range node.Content {
			yamlLines(c, path, lines)
		}
	case yaml.SequenceNode:
		for i, c := range node.Content {
			yamlLines(c, fmt.Sprintf("%s[%d]", path, i), lines)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(node.Content); i += 2 {
			yamlLines(node.Content[i+1], strings.TrimPrefix(path+"."+node.Content[i].Value, "."), lines)
		}
	}
}

// lineOf is the line of field, or of the nearest enclosing one present.
func lineOf(lines map[string]int, field string) int {
	for field != "" {
		if l, ok := lines[field]; ok {
			return l
		}
		field = field[:max(strings.LastIndexAny(field, ".["), 0)]
	}
	return 0
}

var nodeKinds = map[string]NodeKind{"": Host, "host": Host, "router": Router, "switch": Switch}
var linkKinds = map[string]LinkKind{"": Veth, "veth": Veth, "wire": Wire}

// check validates s; its errors are *SpecError naming the field.
func (s Spec) check() error {
	bad := func(field, format string, args ...any) error {
		return &SpecError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	if s.Name != "" && (len(s.Name) > MaxNameLen || !labNameRE.MatchString(s.Name)) {
		return bad("name", "%q: want 1 to %d characters of a-z, 0-9 and -", s.Name, MaxNameLen)
	}
	nodes := map[string]bool{}
	for i, nd := range s.Nodes {
		f := fmt.Sprintf("nodes[%d]", i)
		switch {
		case len(nd.Name) > maxNodeLen || !labNodeRE.MatchString(nd.Name):
			return bad(f+".name", "%q: want 1 to %d characters of a-z, 0-9 and inner -", nd.Name, maxNodeLen)
		case nodes[nd.Name]:
			return bad(f+".name", "%q: a second node of this name", nd.Name)
		}
		if _, ok := nodeKinds[nd.Kind]; !ok {
			return bad(f+".kind", "%q: want host, router or switch", nd.Kind)
		}
		nodes[nd.Name] = true
	}
	for i, l := range s.Links {
		f := fmt.Sprintf("links[%d]", i)
		for _, end := range []struct{ key, name string }{{"a", l.A}, {"b", l.B}} {
			if !nodes[end.name] {
				return bad(f+"."+end.key, "%q: no such node", end.name)
			}
		}
		if l.A == l.B {
			return bad(f+".b", "%q: a link joins two different nodes", l.B)
		}
		if _, err := l.options(); err != nil {
			var se *SpecError
			if errors.As(err, &se) {
				se.Field = f + "." + se.Field
			}
			return err
		}
	}
	uplinked := map[string]bool{}
	for i, u := range s.Uplinks {
		f := fmt.Sprintf("uplinks[%d]", i)
		if !nodes[u.Node] || uplinked[u.Node] {
			return bad(f+".node", "%q: not a node, or a second uplink of it", u.Node)
		}
		uplinked[u.Node] = true
		if _, err := link.ParseImpairSpec(u.Impair); err != nil {
			return bad(f+".impair", "%w", err)
		}
	}
	return nil
}

// options turns the link's text into LinkOptions; its errors are
// *SpecError naming the field within the link.
func (l LinkSpec) options() (LinkOptions, error) {
	bad := func(field string, err error) (LinkOptions, error) {
		return LinkOptions{}, &SpecError{Field: field, Err: err}
	}
	kind, ok := linkKinds[l.Kind]
	if !ok {
		return bad("kind", fmt.Errorf("%q: want veth or wire", l.Kind))
	}
	if _, err := link.ParseImpairSpec(l.Impair); err != nil {
		return bad("impair", err)
	}
	if l.Impair != "" && kind != Wire {
		return bad("impair", errors.New("only a link of kind wire can be impaired"))
	}
	if l.MTU != 0 && (l.MTU < 68 || l.MTU > 65535) {
		return bad("mtu", fmt.Errorf("%d: want 68 to 65535", l.MTU))
	}
	o := LinkOptions{Kind: kind, Impair: l.Impair, MTU: l.MTU, NoIPv6: l.NoIPv6}
	var err error
	if o.Subnet4, err = prefix(l.Subnet4, 4); err != nil {
		return bad("subnet4", err)
	}
	if o.Subnet6, err = prefix(l.Subnet6, 6); err != nil {
		return bad("subnet6", err)
	}
	for name, list := range l.Addrs {
		if name != l.A && name != l.B {
			return bad("addrs."+name, fmt.Errorf("%q is not an end of this link", name))
		}
		for i, a := range list {
			p, err := prefix(a, 0)
			if err != nil || a == "" {
				return bad(fmt.Sprintf("addrs.%s[%d]", name, i), fmt.Errorf("%q: want an address with its prefix length: %w", a, err))
			}
			if o.Addrs == nil {
				o.Addrs = map[string][]netip.Prefix{}
			}
			o.Addrs[name] = append(o.Addrs[name], p)
		}
	}
	return o, nil
}

// prefix parses s ("" is the zero prefix), of IP version v unless 0.
func prefix(s string, v int) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, err
	}
	if v == 4 && !p.Addr().Is4() || v == 6 && !p.Addr().Is6() {
		return p, fmt.Errorf("%q is not an IPv%d prefix", s, v)
	}
	return p, nil
}

// Build makes a network of s: New with opts, where the spec's name, seed
// and capture directory replace opts' when set; then the nodes, links and
// uplinks in their order (AddTo). On an error it closes what it made.
func (s Spec) Build(opts Options) (*Network, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	opts.Name = cmp.Or(s.Name, opts.Name)
	opts.CaptureDir = cmp.Or(s.Capture, opts.CaptureDir)
	if s.Seed != 0 {
		opts.Seed = s.Seed
	}
	n, err := New(opts)
	if err != nil {
		return nil, err
	}
	if err := s.AddTo(n); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	return n, nil
}

// AddTo adds the spec's nodes, links and uplinks to n (whose name, seed
// and capture directory stay n's).
func (s Spec) AddTo(n *Network) error {
	if err := s.check(); err != nil {
		return err
	}
	add := map[NodeKind]func(string) (*Node, error){Host: n.AddHost, Router: n.AddRouter, Switch: n.AddSwitch}
	for _, nd := range s.Nodes {
		if _, err := add[nodeKinds[nd.Kind]](nd.Name); err != nil {
			return err
		}
	}
	for _, l := range s.Links {
		o, _ := l.options() // checked
		if _, err := n.Connect(n.Node(l.A), n.Node(l.B), o); err != nil {
			return err
		}
	}
	for _, u := range s.Uplinks {
		o := UplinkOptions{Impair: u.Impair, HostLoopback: u.HostLoopback, ResolvConf: u.ResolvConf}
		if _, err := n.AddUplink(n.Node(u.Node), o); err != nil {
			return err
		}
	}
	return nil
}
