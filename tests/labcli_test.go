package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapstack/tapstack/lab"
	"github.com/tapstack/tapstack/tests/nstest"
)

// labCLIFile is a lab of two hosts and a router, one side a veth, the
// other a tapstack wire with a delay.
const labCLIFile = `name: %NAME%
nodes:
  - name: alice
  - {name: gw, kind: router}
  - name: bob
links:
  - {a: alice, b: gw}
  - {a: gw, b: bob, kind: wire, impair: delay=2ms}
`

// labCLIUp is a `tapstack lab up` subprocess.
type labCLIUp struct {
	name   string
	cmd    *exec.Cmd
	out    bytes.Buffer // what it printed up to its ready line
	stderr bytes.Buffer
	done   chan error
}

// startLabCLI writes a lab file with a name unique to the test and runs
// `tapstack lab up` on it until its ready line. The cleanup stops it if
// the test did not, and deletes whatever it left.
func startLabCLI(t *testing.T) *labCLIUp {
	t.Helper()
	nstest.Require(t)
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	u := &labCLIUp{name: "lc" + hex.EncodeToString(b[:]), done: make(chan error, 1)}
	file := filepath.Join(t.TempDir(), "lab.yaml")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(labCLIFile, "%NAME%", u.name)), 0o644); err != nil {
		t.Fatal(err)
	}
	u.cmd = exec.Command(tapstackBin, "lab", "up", file)
	u.cmd.Stderr = &u.stderr
	out, err := u.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if u.cmd.ProcessState == nil {
			_ = u.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-u.done:
			case <-time.After(20 * time.Second):
				_ = u.cmd.Process.Kill()
				<-u.done
			}
		}
		if left := labCLILeft(u.name); len(left) > 0 {
			t.Errorf("left behind: %v", left)
			_ = lab.Down(u.name)
		}
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if !ok {
				u.out.WriteString(sc.Text() + "\n")
				if strings.HasPrefix(sc.Text(), "ready") {
					ok = true
					ready <- true
				}
			}
		}
		if !ok {
			ready <- false
		}
		u.done <- u.cmd.Wait()
	}()
	select {
	case ok := <-ready:
		if !ok {
			<-u.done
			t.Fatalf("tapstack lab up exited before ready: %s%s", u.out.String(), u.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("tapstack lab up: no ready line in 60s: %s%s", u.out.String(), u.stderr.String())
	}
	t.Logf("tapstack lab up:\n%s", u.out.String())
	return u
}

// wait waits for the process to end.
func (u *labCLIUp) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-u.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("tapstack lab up still runs 30s later; stderr: %s", u.stderr.String())
		return nil
	}
}

// labCLILeft lists what lab name left: namespaces, /etc/netns
// directories, its state file.
func labCLILeft(name string) []string {
	var left []string
	for _, dir := range []string{"/run/netns", "/etc/netns"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), name+"-") {
				left = append(left, filepath.Join(dir, e.Name()))
			}
		}
	}
	if st := filepath.Join(lab.StateDir, name+".json"); labCLIExists(st) {
		left = append(left, st)
	}
	return left
}

func labCLIExists(path string) bool { _, err := os.Lstat(path); return err == nil }

// labCLIPing pings node to from node from, by name.
func labCLIPing(t *testing.T, name, from, to string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", name+"-"+from, "ping", "-c", "2", "-W", "3", to).CombinedOutput()
	if err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", to, from, err, out)
	}
}

// TestLabCLIUpPingsAndSIGTERMRemovesAll: `tapstack lab up` prints each
// node's `ip netns exec` line and its state file, nodes reach each other
// by name across the router and the wire, and SIGTERM removes everything.
func TestLabCLIUpPingsAndSIGTERMRemovesAll(t *testing.T) {
	u := startLabCLI(t)
	for _, want := range []string{"ip netns exec " + u.name + "-alice bash", "ip netns exec " + u.name + "-bob bash", "wire"} {
		if !strings.Contains(u.out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if !labCLIExists(filepath.Join(lab.StateDir, u.name+".json")) {
		t.Errorf("no state file in %s", lab.StateDir)
	}
	labCLIPing(t, u.name, "alice", "bob")
	labCLIPing(t, u.name, "bob", "alice."+u.name)
	if err := u.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := u.wait(t); err != nil {
		t.Fatalf("tapstack lab up after SIGTERM: %v; stderr: %s", err, u.stderr.String())
	}
	if left := labCLILeft(u.name); len(left) > 0 {
		t.Fatalf("after SIGTERM, left behind: %v", left)
	}
}

// TestLabCLIDownAfterSIGKILL: a killed `lab up` leaves its namespaces;
// `tapstack lab down NAME` removes them, and a second down says there is
// no such lab.
func TestLabCLIDownAfterSIGKILL(t *testing.T) {
	u := startLabCLI(t)
	if err := u.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = u.wait(t)
	if left := labCLILeft(u.name); len(left) == 0 {
		t.Fatal("a killed lab left nothing: the test proves nothing")
	}
	if out, err := exec.Command(tapstackBin, "lab", "down", u.name).CombinedOutput(); err != nil {
		t.Fatalf("tapstack lab down: %v\n%s", err, out)
	}
	if left := labCLILeft(u.name); len(left) > 0 {
		t.Fatalf("after lab down, left behind: %v", left)
	}
	out, err := exec.Command(tapstackBin, "lab", "down", u.name).CombinedOutput()
	if code := labCLIExit(err); code != 1 || !strings.Contains(string(out), "none is recorded") {
		t.Fatalf("a second lab down: exit %d, %q", code, out)
	}
}

// TestLabCLIDownStopsARunningLab: `tapstack lab down NAME` on a lab that
// runs sends it SIGTERM and waits: it exits 0 having removed everything.
func TestLabCLIDownStopsARunningLab(t *testing.T) {
	u := startLabCLI(t)
	if out, err := exec.Command(tapstackBin, "lab", "down", u.name).CombinedOutput(); err != nil {
		t.Fatalf("tapstack lab down: %v\n%s", err, out)
	}
	if err := u.wait(t); err != nil {
		t.Fatalf("tapstack lab up: %v; stderr: %s", err, u.stderr.String())
	}
	if left := labCLILeft(u.name); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestLabCLIBadFiles: a bad file is exit 1 and one message naming the
// file, the line and the field; nothing is built (no root needed).
func TestLabCLIBadFiles(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ file, data, want string }{
		{"unknown.yaml", "name: x1\nnodes:\n  - {name: a, colour: red}\n", "unknown.yaml: line 3: field colour not found"},
		{"undefined.yaml", "nodes:\n  - {name: a}\nlinks:\n  - {a: a, b: nobody}\n", `undefined.yaml:4: links[0].b: "nobody": no such node`},
		{"impair.toml", "[[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"b\"\n[[links]]\na = \"a\"\nb = \"b\"\nkind = \"wire\"\nimpair = \"loss=lots\"\n", "impair.toml: links[0].impair:"},
		{"prefix.yml", "nodes: [{name: a}, {name: b}]\nlinks:\n  - a: a\n    b: b\n    subnet6: fd00::/129\n", "prefix.yml:5: links[0].subnet6:"},
		{"dup.yaml", "nodes: [{name: a}, {name: a}]\n", `dup.yaml:1: nodes[1].name: "a": a second node`},
		{"lab.json", "{}", `unknown format ".json"`},
	} {
		path := filepath.Join(dir, c.file)
		if err := os.WriteFile(path, []byte(c.data), 0o644); err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd := exec.Command(tapstackBin, "lab", "up", path)
		cmd.Stderr = &stderr
		err := cmd.Run()
		msg := strings.TrimSpace(stderr.String())
		if code := labCLIExit(err); code != 1 || !strings.HasPrefix(msg, "tapstack lab: ") || !strings.Contains(msg, c.want) || strings.Count(msg, "\n") > 0 {
			t.Errorf("%s: exit %d, stderr %q; want 1 and one line with %q", c.file, code, msg, c.want)
		}
	}
	out, err := exec.Command(tapstackBin, "lab", "up", filepath.Join(dir, "missing.yaml")).CombinedOutput()
	if labCLIExit(err) != 1 || !strings.Contains(string(out), "no such file") {
		t.Errorf("missing file: %v %q", err, out)
	}
	out, err = exec.Command(tapstackBin, "lab", "sideways").CombinedOutput()
	if labCLIExit(err) != 2 || !strings.Contains(string(out), "Usage: tapstack lab up FILE") {
		t.Errorf("bad usage: %v %q", err, out)
	}
}

// labCLIExit is the exit status of a finished command's error.
func labCLIExit(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
