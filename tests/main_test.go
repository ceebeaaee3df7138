// Package tests holds tapstack's integration tests: real kernel tools in a
// network namespace against a tapstack host (see package nstest).
package tests

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
	// Stopped (Ctrl-C, a kill), the tests leave nothing behind: the
	// namespaces they made go with what runs in them. (Their daemons
	// and servers get SIGTERM from dieWithTest.)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		removeNoted()
		os.RemoveAll(dir)
		os.Exit(128 + int(s.(syscall.Signal)))
	}()
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// noted are the namespaces the tests made (noteNetns), for the signal
// handler of TestMain.
var noted struct {
	sync.Mutex
	names []string
}

// noteNetns records a namespace a test is about to make: if the tests
// are stopped before its cleanup, TestMain removes it.
func noteNetns(ns string) {
	noted.Lock()
	defer noted.Unlock()
	noted.names = append(noted.names, ns)
}

// removeNoted ends what runs in the noted namespaces that still exist
// and removes them.
func removeNoted() {
	noted.Lock()
	defer noted.Unlock()
	for _, ns := range noted.names {
		out, err := exec.Command("ip", "netns", "pids", ns).Output()
		if err != nil {
			continue // gone already
		}
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGTERM)
			}
		}
		exec.Command("ip", "netns", "del", ns).Run()
	}
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
