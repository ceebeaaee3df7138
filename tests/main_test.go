// Package tests holds tapstack's integration tests: real kernel tools in a
// network namespace against a tapstack host (see package nstest).
package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
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

// dieWithTest makes a long-lived process the test starts (a daemon, a
// server) get SIGTERM when the test process dies before its cleanup
// (killed, or a -timeout panic): a daemon then drains and removes the
// namespace it made, and no server is left behind. (It is kept across
// ip netns exec, which execs the command.)
func dieWithTest(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
}
