package control

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"
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
	s, err := Listen(path, h)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := Listen(path, h); err == nil {
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
