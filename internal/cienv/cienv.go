// Package cienv decides what a test does when something it needs is
// missing: skip with one line on a developer's machine, fail on CI, where
// a green run must mean that every namespace and tool test ran. CI is
// recognised by CI=true in the environment (as .ci/run and most CI
// services set it).
package cienv

import (
	"os"
	"os/exec"
)

// TB is the part of testing.TB used here.
type TB interface {
	Helper()
	Skip(args ...any)
	Fatalf(format string, args ...any)
}

// IsCI reports whether the tests run on CI.
func IsCI() bool { return os.Getenv("CI") == "true" }

// Skip skips the test with why, or fails it on CI.
func Skip(t TB, why string) {
	t.Helper()
	if IsCI() {
		t.Fatalf("%s (on CI this test must run: install what it needs in .ci/run)", why)
	}
	t.Skip(why)
}

// RequireTool skips (or fails on CI) unless each named program is on PATH.
func RequireTool(t TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			Skip(t, "skipped: needs "+n+" on PATH")
		}
	}
}
