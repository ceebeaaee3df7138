package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/tests/nstest"
)

// labModuleTest is the test of a module outside the repository, written
// as another project would: two hosts on a tapstack wire, a ping by name,
// a Go server run inside one node and dialled from a Go function in the
// other.
const labModuleTest = `package labuser

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tapstack/tapstack/lab"
	"github.com/tapstack/tapstack/tests/nstest"
)

func TestTwoHosts(t *testing.T) {
	n := nstest.NewNetwork(t, lab.Options{})
	a, err := n.AddHost("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.AddHost("b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Connect(a, b, lab.LinkOptions{Kind: lab.Wire, Impair: "delay=5ms"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := a.Command(ctx, "ping", "-c", "2", "-W", "3", "b").CombinedOutput(); err != nil {
		t.Fatalf("ping b: %v\n%s", err, out)
	}

	var ln net.Listener
	if err := b.Run(func() (err error) { ln, err = net.Listen("tcp", ":7000"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("hello from b"))
			c.Close()
		}
	}()
	if err := b.WaitPort(ctx, "tcp", ":7000"); err != nil {
		t.Fatal(err)
	}
	var got []byte
	err = a.Run(func() error {
		c, err := net.Dial("tcp", netip.AddrPortFrom(b.Addr4(), 7000).String())
		if err != nil {
			return err
		}
		defer c.Close()
		got, err = io.ReadAll(c)
		return err
	})
	if err != nil || string(got) != "hello from b" {
		t.Fatalf("dial b from a: %q, %v", got, err)
	}
}
`

// TestLabFromAnotherModule: a module outside the repository, with its
// own go.mod that requires tapstack through a replace (and tapstack's
// replace of gVisor, as docs/library.md says), imports the lab and its
// test passes.
func TestLabFromAnotherModule(t *testing.T) {
	nstest.Require(t)
	if testing.Short() {
		t.Skip("builds tapstack in another module")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := ""
	mod := "module example.com/labuser\n\nrequire github.com/tapstack/tapstack v0.0.0-00010101000000-000000000000\n\n" +
		"replace github.com/tapstack/tapstack => " + repo + "\n"
	for _, l := range strings.Split(string(gomod), "\n") {
		switch {
		case strings.HasPrefix(l, "go "):
			goLine = l
		case strings.HasPrefix(l, "replace "):
			// A relative path is relative to the repository.
			if i := strings.Index(l, "=> ./"); i >= 0 {
				l = l[:i] + "=> " + filepath.Join(repo, l[i+len("=> ./"):])
			}
			mod += l + "\n"
		}
	}
	if goLine == "" || !strings.Contains(mod, "gvisor.dev/gvisor") {
		t.Fatalf("go.mod lacks its go line or the replace of gVisor:\n%s", gomod)
	}
	dir := t.TempDir()
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"go.mod":          goLine + "\n\n" + mod,
		"go.sum":          string(sum),
		"labuser_test.go": labModuleTest,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-v", "-run", "TestTwoHosts", ".")
	cmd.Dir = dir
	// -mod=mod lets go complete the requirements from tapstack's go.mod;
	// the module cache has them, as it does for the repository's build.
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestTwoHosts") {
		t.Fatalf("go test in %s: %v\n%s", dir, err, out)
	}
	t.Logf("the other module's test:\n%s", out)
}
