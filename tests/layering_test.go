package tests

import (
	"encoding/json"
	"os/exec"
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

// TestLayering keeps the layer table of DESIGN.md true.
func TestLayering(t *testing.T) {
	const mod = "github.com/tapstack/tapstack/"
	pkgs := listPackages(t)
	rules := []struct {
		pkgPrefix string
		forbidden []string
	}{
		{mod + "link", []string{mod + "stack", mod + "sockets", mod + "cmd"}},
		{mod + "stack", []string{mod + "sockets", mod + "cmd"}},
		{mod + "stack/netns", []string{"gvisor.dev/gvisor", "github.com/songgao/water", mod + "link"}},
		{mod + "sockets", []string{"github.com/songgao/water", mod + "link", mod + "stack/netns", mod + "stack/nshost", mod + "cmd"}},
	}
	for path, p := range pkgs {
		for _, r := range rules {
			if path != r.pkgPrefix && !strings.HasPrefix(path, r.pkgPrefix+"/") {
				continue
			}
			for _, d := range p.Deps {
				for _, f := range r.forbidden {
					if d == f || strings.HasPrefix(d, f+"/") {
						t.Errorf("%s depends on %s", path, d)
					}
				}
			}
		}
		// The stack package itself never touches the TAP library; its
		// nshost subpackage is where a TAP and a stack meet.
		if path == mod+"stack" {
			for _, d := range p.Deps {
				if strings.HasPrefix(d, "github.com/songgao/water") || d == mod+"link" {
					t.Errorf("stack depends on %s", d)
				}
			}
		}
		if strings.HasPrefix(path, mod+"cmd/") {
			for _, d := range p.Imports {
				if strings.HasPrefix(d, "gvisor.dev/gvisor") {
					t.Errorf("%s imports %s directly: go through stack or sockets", path, d)
				}
			}
		}
		for _, d := range p.Deps {
			if d == "testing" {
				t.Errorf("non-test package %s depends on testing", path)
			}
		}
	}
	if len(pkgs) < 6 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
}
