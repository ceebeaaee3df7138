package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

type fakeForwards struct{ m map[string]bool }

func (f *fakeForwards) AddForward(s string) error {
	if s == "bad" {
		return errors.New("bad spec")
	}
	f.m[s] = true
	return nil
}
func (f *fakeForwards) RemoveForward(s string) error {
	if !f.m[s] {
		return errors.New("no such forward")
	}
	delete(f.m, s)
	return nil
}
func (f *fakeForwards) Stats() map[string]uint64 {
	return map[string]uint64{"forwards": uint64(len(f.m))}
}

func (f *fakeForwards) ListForwards() []string {
	var out []string
	for k := range f.m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestControlSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d", "ctl.sock")
	h := &fakeForwards{m: map[string]bool{}}
	s, err := Listen(path, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := Listen(path, h, nil); err == nil {
		t.Fatal("a second daemon took a live socket")
	}
	if _, err := Call(path, Request{Op: "add", Spec: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Call(path, Request{Op: "add", Spec: "bad"}); err == nil || err.Error() != "bad spec" {
		t.Fatalf("bad add: %v", err)
	}
	r, err := Call(path, Request{Op: "ls"})
	if err != nil || len(r.Forwards) != 1 || r.Forwards[0] != "a" {
		t.Fatalf("ls: %+v %v", r, err)
	}
	if _, err := Call(path, Request{Op: "rm", Spec: "zz"}); err == nil {
		t.Fatal("rm of a missing forward succeeded")
	}
	if r, err := Call(path, Request{Op: "stats"}); err != nil || r.Stats["forwards"] != 1 {
		t.Fatalf("stats: %+v %v", r, err)
	}
	if _, err := Call(path, Request{Op: "frob"}); err == nil {
		t.Fatal("unknown op accepted")
	}
	s.Close()
	if _, err := os.Stat(path); err == nil {
		t.Fatal("socket left after Close")
	}
	if _, err := Call(path, Request{Op: "ls"}); err == nil {
		t.Fatal("Call succeeded with no daemon")
	}
}

// TestSocketRemovedUnderTheServerComesBack: removing the socket file (or
// its folder) makes the server make it again within a second or so; the
// server says so once.
func TestSocketRemovedUnderTheServerComesBack(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	path := filepath.Join(dir, "ctl.sock")
	var logs []string
	var mu sync.Mutex
	s, err := Listen(path, &fakeForwards{m: map[string]bool{"x": true}}, func(f string, a ...any) {
		mu.Lock()
		logs = append(logs, fmt.Sprintf(f, a...))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for round, remove := range []func() error{
		func() error { return os.Remove(path) },
		func() error { return os.RemoveAll(dir) },
	} {
		if err := remove(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for {
			r, err := Call(path, Request{Op: "ls"})
			if err == nil && len(r.Forwards) == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the socket did not come back: %v", round, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	mu.Lock()
	n := len(logs)
	mu.Unlock()
	if n != 2 {
		t.Fatalf("log lines: %q, want one per removal", logs)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("remade socket: %v %v", fi, err)
	}
	s.Close()
	if _, err := os.Stat(path); err == nil {
		t.Fatal("socket left after Close")
	}
}

// FuzzControlRequest: a line on the control socket, whatever it holds,
// gets one JSON answer and never a panic.
func FuzzControlRequest(f *testing.F) {
	for _, s := range []string{`{"op":"ls"}`, `{"op":"add","spec":"8080:80"}`, `{"op":"rm","spec":"bad"}`, `{"op":"stats"}`,
		`{"op":1}`, `{}`, `[]`, `null`, `{"op":"add","spec":null}`, "\x00", `{"op":"ls","x":[1,2,{}]}`} {
		f.Add([]byte(s))
	}
	path := filepath.Join(f.TempDir(), "ctl.sock")
	s, err := Listen(path, &fakeForwards{m: map[string]bool{}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, line []byte) {
		var req Request
		var resp Response
		if err := json.Unmarshal(line, &req); err != nil {
			resp = Response{Error: "bad request: " + err.Error()}
		} else {
			resp = s.do(req)
		}
		if _, err := json.Marshal(resp); err != nil {
			t.Fatalf("answer to %q cannot be encoded: %v", line, err)
		}
		if !resp.OK && resp.Error == "" {
			t.Fatalf("a failed request %q says nothing", line)
		}
	})
}
