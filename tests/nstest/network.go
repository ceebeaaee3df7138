package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"

	"github.com/tapstack/tapstack/lab"
)

// NewNetwork makes a lab network (package lab) owned by the test: a name
// unique to it unless opts.Name is set, the lab's log in t.Logf unless
// opts.Logf is set, every link captured into a temporary directory unless
// opts.CaptureDir is set, and everything removed in t.Cleanup, pass, fail
// or panic. When the test failed, the captures are kept and their
// directory logged (moved to the test's ArtifactDir under go test
// -artifacts); otherwise they are deleted. The seed is logged so that
// a failing run can be replayed.
func NewNetwork(t T, opts lab.Options) *lab.Network {
	t.Helper()
	Require(t)
	if opts.Name == "" {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			t.Fatalf("nstest: %v", err)
		}
		opts.Name = "t" + hex.EncodeToString(b[:])
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	tmp := ""
	if opts.CaptureDir == "" {
		dir, err := os.MkdirTemp("", "nstest-"+opts.Name+"-")
		if err != nil {
			t.Fatalf("nstest: %v", err)
		}
		tmp, opts.CaptureDir = dir, dir
	}
	n, err := lab.New(opts)
	if err != nil {
		if tmp != "" {
			os.RemoveAll(tmp)
		}
		t.Fatalf("nstest: %v", err)
	}
	t.Logf("nstest: network %s, seed %d", n.Name(), n.Seed())
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Logf("nstest: cleanup: %v", err)
		}
		if tmp == "" {
			return
		}
		if f, ok := t.(interface{ Failed() bool }); !ok || !f.Failed() || !hasPcaps(tmp) {
			os.RemoveAll(tmp)
			return
		}
		// With go test -artifacts, the captures join the test's
		// artifacts; otherwise they stay where they are.
		if a, ok := t.(interface{ ArtifactDir() string }); ok && artifactsKept() {
			dst := filepath.Join(a.ArtifactDir(), "captures-"+n.Name())
			if err := os.Rename(tmp, dst); err == nil {
				t.Logf("nstest: the captures of network %s are in %s", n.Name(), dst)
				return
			}
		}
		t.Logf("nstest: the captures of network %s are kept in %s", n.Name(), tmp)
	})
	return n
}

// artifactsKept says whether go test runs with -artifacts (the test's
// ArtifactDir is kept).
func artifactsKept() bool {
	f := flag.Lookup("test.artifacts")
	return f != nil && f.Value.String() == "true"
}

// hasPcaps says whether dir holds a capture file.
func hasPcaps(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".pcap") {
			return true
		}
	}
	return false
}
