package tests

import (
	"encoding/json"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

type pkgInfo struct {
	ImportPath string
	Deps       []string
	Imports    []string
}

// listPackages runs go list -deps over the module's packages.
func listPackages(t *testing.T) map[string]pkgInfo {
	t.Helper()
	out, err := exec.Command("go", "list", "-json=ImportPath,Deps,Imports", "github.com/tapstack/tapstack/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkgInfo{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkgInfo
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs[p.ImportPath] = p
	}
	return pkgs
}

// mayImport is the import map of the module's packages: who may import
// whom within the module (the layers of the design, bottom up). A package
// not named here fails the test until it is placed.
var mayImport = map[string][]string{
	"internal/cienv":    nil,
	"internal/nbio":     nil,
	"internal/gopool":   nil,
	"link":              {"internal/nbio"},
	"stack":             {"link"}, // link only for its constants: TestLayering checks stack stays off the TAP below
	"stack/netns":       nil,
	"stack/nshost":      {"link", "stack", "stack/netns", "internal/nbio"},
	"sockets":           {"stack", "internal/nbio"},
	"sockets/examples":  {"sockets", "stack", "link"},
	"metrics":           {"link", "stack", "sockets", "internal/nbio"},
	"relay":             {"stack", "sockets", "internal/gopool", "internal/nbio"},
	"internal/capture":  {"link", "internal/nbio"},
	"internal/control":  {"relay", "sockets", "stack", "internal/gopool", "internal/nbio"},
	"internal/services": {"stack", "sockets", "internal/nbio"},
	"internal/handoff":  {"link", "stack/netns", "stack/nshost", "stack", "internal/nbio"},
	"internal/sandbox":  nil,
	"internal/slirpapi": {"relay", "stack", "sockets", "internal/gopool", "internal/nbio"},
	"internal/getopt":   nil,
	"internal/pastacli": {"internal/getopt", "daemon", "link", "stack", "stack/netns", "stack/nshost", "sockets", "metrics", "relay",
		"internal/capture", "internal/control", "internal/services", "internal/gopool", "internal/nbio"},
	"internal/slirpcli":  {"internal/getopt", "link", "stack", "stack/netns", "stack/nshost", "internal/nbio"},
	"internal/ncat":      {"sockets", "stack", "internal/nbio"},
	"internal/bench":     {"internal/cienv"},
	"internal/pollbench": {"internal/nbio"},
	// A measurement program of scripts/ (rr-interleaved.sh FLOOR=1): it
	// stands alone, as its C twin does.
	"scripts/floor-relay/go": nil,
	"daemon": {"link", "stack", "stack/netns", "stack/nshost", "sockets", "metrics", "relay",
		"internal/capture", "internal/control", "internal/services", "internal/gopool", "internal/nbio"},
	"lab": {"daemon", "link", "stack", "stack/netns", "stack/nshost", "sockets", "metrics", "relay",
		"internal/capture", "internal/control", "internal/services", "internal/gopool", "internal/nbio", "internal/cienv"},
	"tests/nstest": {"lab", "daemon", "link", "stack", "stack/netns", "stack/nshost", "sockets", "metrics", "relay",
		"internal/capture", "internal/control", "internal/services", "internal/gopool", "internal/nbio", "internal/cienv"},
	"cmd/tapstack": {"lab", "daemon", "link", "stack", "stack/netns", "stack/nshost", "sockets", "metrics", "relay",
		"internal/bench", "internal/capture", "internal/control", "internal/services", "internal/handoff",
		"internal/sandbox", "internal/slirpapi", "internal/slirpcli", "internal/pastacli", "internal/getopt", "internal/ncat", "internal/gopool", "internal/nbio", "internal/cienv"},
}

// TestLayering keeps the layers of the design true: every package of the
// module is in the import map, depends only on what the map allows, and
// no two packages depend on each other (go list would fail on a cycle,
// and the map is checked to have none).
func TestLayering(t *testing.T) {
	const mod = "github.com/tapstack/tapstack/"
	pkgs := listPackages(t)
	for path, p := range pkgs {
		rel := strings.TrimPrefix(path, mod)
		allowed, ok := mayImport[rel]
		if !ok {
			if strings.HasPrefix(rel, "tests") || strings.HasPrefix(rel, "third_party") {
				continue // test-only packages and the vendored gVisor
			}
			t.Errorf("%s is not in the import map of TestLayering: place it in a layer", rel)
			continue
		}
		for _, d := range p.Deps {
			if !strings.HasPrefix(d, mod) {
				continue
			}
			dep := strings.TrimPrefix(d, mod)
			if !contains(allowed, dep) {
				t.Errorf("%s depends on %s, which the import map does not allow", rel, dep)
			}
		}
		// The stack never touches the TAP library; the lowest layers
		// never reach a command line or the relay.
		for _, d := range p.Deps {
			if (rel == "stack" || rel == "sockets" || rel == "relay") && strings.HasPrefix(d, "github.com/songgao/water") {
				t.Errorf("%s depends on %s", rel, d)
			}
			if rel == "stack/netns" && (strings.HasPrefix(d, "gvisor.dev/gvisor") || strings.HasPrefix(d, "github.com/songgao/water")) {
				t.Errorf("%s depends on %s", rel, d)
			}
			if d == "testing" {
				t.Errorf("non-test package %s depends on testing", rel)
			}
		}
		if strings.HasPrefix(rel, "cmd/") || rel == "daemon" {
			for _, d := range p.Imports {
				if strings.HasPrefix(d, "gvisor.dev/gvisor") {
					t.Errorf("%s imports %s directly: go through stack, sockets or relay", rel, d)
				}
			}
		}
	}
	// No cycle in the map itself: a layer never allows one above it.
	var visit func(p string, seen []string)
	visit = func(p string, seen []string) {
		if contains(seen, p) {
			t.Errorf("the import map has a cycle: %s", strings.Join(append(seen, p), " → "))
			return
		}
		for _, q := range mayImport[p] {
			visit(q, append(seen, p))
		}
	}
	names := make([]string, 0, len(mayImport))
	for p := range mayImport {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		visit(p, nil)
	}
	if len(pkgs) < 15 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
