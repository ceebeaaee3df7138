// Package tests holds tapstack's integration tests: real kernel tools in a
// network namespace against a tapstack host (see package nstest).
package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// tapstackBin is the tapstack binary built once for the tests that run it
// as a subprocess.
var tapstackBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tapstack-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tapstackBin = filepath.Join(dir, "tapstack")
	build := exec.Command("go", "build", "-o", tapstackBin, "github.com/tapstack/tapstack/cmd/tapstack")
	// As the README builds it: static, without libc.
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build tapstack:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	_ = os.Chmod(dir, 0o755)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
