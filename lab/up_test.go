package lab_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapstack/tapstack/lab"
	"github.com/tapstack/tapstack/tests/nstest"
)

// lockedBuffer is what Up writes, read while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// uniqueLabName is a lab name no other test uses.
func uniqueLabName(t *testing.T, prefix string) string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b[:])[:5]
}

// TestUpRecordsRunsAndRemoves: Up prints each node's `ip netns exec`
// line, records its state (PID, namespaces, link ends, the uplink's
// control socket), and when its context ends removes the network, its
// files and the record. (The package's tests run isolated: the uplink
// reaches nothing outside.)
func TestUpRecordsRunsAndRemoves(t *testing.T) {
	nstest.Require(t)
	name := uniqueLabName(t, "up")
	spec, err := lab.ParseSpec("t.yaml", []byte("name: "+name+`
nodes: [{name: a}, {name: r, kind: router}, {name: sw, kind: switch}, {name: b}, {name: c}]
links:
  - {a: a, b: r, kind: wire, impair: delay=1ms}
  - {a: r, b: sw}
  - {a: b, b: sw}
  - {a: c, b: sw}
uplinks: [{node: r}]
`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out lockedBuffer
	done := make(chan error, 1)
	go func() { done <- lab.Up(ctx, spec, &out) }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "ready") {
		select {
		case err := <-done:
			t.Fatalf("Up ended before ready: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("no ready line in 30s:\n%s", out.String())
		}
	}
	t.Logf("Up:\n%s", out.String())
	for _, want := range []string{"ip netns exec " + name + "-a bash", "ip netns exec " + name + "-c bash", "wire"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	data, err := os.ReadFile(filepath.Join(lab.StateDir, name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var st lab.State
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	if st.PID != os.Getpid() || len(st.Namespaces) != 5 || len(st.Links) != 8 || len(st.Bridges) != 1 {
		t.Errorf("state: %+v", st)
	}
	var sock string
	for _, f := range st.Files {
		if strings.HasSuffix(f, ".sock") {
			sock = f
		}
	}
	if _, err := os.Stat(sock); sock == "" || err != nil {
		t.Errorf("the uplink's control socket is not recorded (%q): %v", sock, err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	if out, err := exec.CommandContext(ctx2, "ip", "netns", "exec", name+"-a", "ping", "-c1", "-W3", "c."+name).CombinedOutput(); err != nil {
		t.Errorf("ping c from a: %v\n%s", err, out)
	}
	// A second Up of the same name is refused while the first runs.
	if err := lab.Up(context.Background(), spec, &lockedBuffer{}); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("a second Up: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Up: %v", err)
	}
	for _, ns := range st.Namespaces {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			t.Errorf("namespace %s left", ns)
		}
	}
	for _, f := range append(st.Files, filepath.Join(lab.StateDir, name+".json")) {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s left", f)
		}
	}
}

// TestDownRemovesWhatAKilledLabLeft: a record whose process is gone makes
// Down delete the namespaces and files it lists, and only those that
// belong to the lab's name.
func TestDownRemovesWhatAKilledLabLeft(t *testing.T) {
	nstest.Require(t)
	name := uniqueLabName(t, "dn")
	ns, other := name+"-x", name+"x-other" // the second is not the lab's: Down leaves it
	for _, n := range []string{ns, other} {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", n).Run() })
	}
	etc := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	// A process that ran and ended: its PID and start time are stale.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	st := lab.State{Name: name, PID: dead.Process.Pid, Start: 1, Namespaces: []string{ns, other}, Files: []string{etc, "/etc/hostname"}}
	data, _ := json.Marshal(st)
	if err := os.MkdirAll(lab.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(lab.StateDir, name+".json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(file) })
	// Up refuses the name until Down.
	spec := lab.Spec{Name: name, Nodes: []lab.NodeSpec{{Name: "x"}}}
	if err := lab.Up(context.Background(), spec, &lockedBuffer{}); err == nil || !strings.Contains(err.Error(), "lab down "+name) {
		t.Errorf("Up over a left lab: %v", err)
	}
	if err := lab.Down(name); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{"/run/netns/" + ns: false, etc: false, file: false, "/run/netns/" + other: true, "/etc/hostname": true} {
		if _, err := os.Stat(path); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", path, err == nil, want)
		}
	}
	if err := lab.Down(name); err == nil || !strings.Contains(err.Error(), "none is recorded") {
		t.Errorf("a second Down: %v", err)
	}
	if err := lab.Down("../../etc/x"); err == nil || !strings.Contains(err.Error(), "not a lab name") {
		t.Errorf("Down of a path: %v", err)
	}
}
