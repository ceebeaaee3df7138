package lab

import (
	"errors"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSpecExampleParses(t *testing.T) {
	s, err := ReadSpec(filepath.Join("..", "docs", "lab-example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "demo" || s.Seed != 42 || len(s.Nodes) != 3 || len(s.Links) != 2 || len(s.Uplinks) != 1 {
		t.Fatalf("spec: %+v", s)
	}
	o, err := s.Links[1].options()
	if err != nil {
		t.Fatal(err)
	}
	want := LinkOptions{Kind: Wire, Impair: "loss=5%,delay=10ms", MTU: 1400,
		Subnet4: netip.MustParsePrefix("192.168.50.0/24"),
		Addrs:   map[string][]netip.Prefix{"server": {netip.MustParsePrefix("192.168.50.10/24")}}}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("link options %+v, want %+v", o, want)
	}
}

const specYAML = `name: t1
seed: 7
nodes:
  - {name: a}
  - {name: r, kind: router}
  - {name: b}
links:
  - {a: a, b: r}
  - {a: r, b: b, kind: wire, impair: "loss=1%"}
uplinks:
  - {node: r, host_loopback: true}
`

const specTOML = `name = "t1"
seed = 7

[[nodes]]
name = "a"

[[nodes]]
name = "r"
kind = "router"

[[nodes]]
name = "b"

[[links]]
a = "a"
b = "r"

[[links]]
a = "r"
b = "b"
kind = "wire"
impair = "loss=1%"

[[uplinks]]
node = "r"
host_loopback = true
`

func TestSpecYAMLAndTOMLAgree(t *testing.T) {
	y, err := ParseSpec("t.yaml", []byte(specYAML))
	if err != nil {
		t.Fatal(err)
	}
	tm, err := ParseSpec("t.toml", []byte(specTOML))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(y, tm) {
		t.Fatalf("yaml %+v\ntoml %+v", y, tm)
	}
	if _, err := ParseSpec("t.yml", []byte(specYAML)); err != nil {
		t.Fatal(err)
	}
}

func TestSpecErrors(t *testing.T) {
	for _, c := range []struct {
		name, file, data string
		want             string // in the message
		line             int    // of the *SpecError, 0: not checked
	}{
		{"unknown key yaml", "x.yaml", "nodes:\n  - {name: a, colour: red}\n", "x.yaml: line 2: field colour not found", 0},
		{"unknown key toml", "x.toml", "[[nodes]]\nname = \"a\"\ncolour = \"red\"\n", "x.toml: nodes.colour: unknown key", 0},
		{"yaml syntax", "x.yaml", "nodes: [\n", "x.yaml: line 1", 0},
		{"toml syntax", "x.toml", "name = \n", "x.toml: line 1", 0},
		{"toml type", "x.toml", "seed = \"x\"\n", "x.toml: line 1", 0},
		{"duplicate key", "x.yaml", "name: a\nname: b\n", `line 2: mapping key "name" already defined at line 1`, 0},
		{"duplicate node", "x.yaml", "nodes:\n  - name: a\n  - name: a\n", `x.yaml:3: nodes[1].name: "a": a second node`, 3},
		{"duplicate node toml", "x.toml", "[[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"a\"\n", `x.toml: nodes[1].name: "a": a second node`, 0},
		{"undefined node", "x.yaml", "nodes: [{name: a}]\nlinks:\n  - a: a\n    b: z\n", `x.yaml:4: links[0].b: "z": no such node`, 4},
		{"bad impair", "x.yaml", "nodes: [{name: a}, {name: b}]\nlinks:\n  - {a: a, b: b, kind: wire, impair: loss=200%}\n", "x.yaml:3: links[0].impair:", 3},
		{"impair on veth", "x.yaml", "nodes: [{name: a}, {name: b}]\nlinks:\n  - {a: a, b: b, impair: loss=1%}\n", "links[0].impair: only a link of kind wire", 3},
		{"bad prefix", "x.yaml", "nodes: [{name: a}, {name: b}]\nlinks:\n  - a: a\n    b: b\n    subnet4: 10.0.0/24\n", "x.yaml:5: links[0].subnet4:", 5},
		{"v6 as v4", "x.yaml", "nodes: [{name: a}, {name: b}]\nlinks:\n  - {a: a, b: b, subnet4: 'fd00::/64'}\n", "not an IPv4 prefix", 3},
		{"bad addr", "x.yaml", "nodes: [{name: a}, {name: b}]\nlinks:\n  - a: a\n    b: b\n    addrs:\n      a: [10.1.1.1]\n", "x.yaml:6: links[0].addrs.a[0]:", 6},
		{"addr of other node", "x.yaml", "nodes: [{name: a}, {name: b}, {name: c}]\nlinks:\n  - a: a\n    b: b\n    addrs: {c: [10.1.1.1/24]}\n", "links[0].addrs.c:", 0},
		{"bad kind", "x.yaml", "nodes: [{name: a, kind: hub}]\n", `x.yaml:1: nodes[0].kind: "hub"`, 1},
		{"bad link kind", "x.yaml", "nodes: [{name: a}, {name: b}]\nlinks: [{a: a, b: b, kind: cable}]\n", `links[0].kind: "cable"`, 2},
		{"bad name", "x.yaml", "name: Too-Long-Name\n", "x.yaml:1: name:", 1},
		{"bad node name", "x.yaml", "nodes: [{name: A_1}]\n", "nodes[0].name:", 1},
		{"loop link", "x.yaml", "nodes: [{name: a}]\nlinks: [{a: a, b: a}]\n", "links[0].b:", 2},
		{"bad mtu", "x.yaml", "nodes: [{name: a}, {name: b}]\nlinks: [{a: a, b: b, mtu: 20}]\n", "links[0].mtu: 20", 2},
		{"uplink to nothing", "x.yaml", "nodes: [{name: a}]\nuplinks: [{node: b}]\n", "uplinks[0].node:", 2},
		{"bad uplink impair", "x.yaml", "nodes: [{name: a}]\nuplinks: [{node: a, impair: lots}]\n", "uplinks[0].impair:", 2},
		{"format", "x.json", "{}", `x.json: unknown format ".json"`, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSpec(c.file, []byte(c.data))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("%v is not a *SpecError", err)
			}
			if c.line != 0 && se.Line != c.line {
				t.Fatalf("%v: line %d, want %d", err, se.Line, c.line)
			}
		})
	}
}

// TestSpecBuildChecksFirst: a Spec made in Go is checked before anything
// is built (no namespace, no root needed for the error).
func TestSpecBuildChecksFirst(t *testing.T) {
	s := Spec{Nodes: []NodeSpec{{Name: "a"}}, Links: []LinkSpec{{A: "a", B: "nowhere"}}}
	_, err := s.Build(Options{})
	if err == nil || !strings.Contains(err.Error(), `links[0].b: "nowhere": no such node`) {
		t.Fatalf("Build: %v", err)
	}
}
