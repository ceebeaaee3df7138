package sockets

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// TestErrnoTableCoversEveryGVisorError parses gVisor's errors.go and
// checks that every Err type it declares has an entry.
func TestErrnoTableCoversEveryGVisorError(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "gvisor.dev/gvisor").Output()
	if err != nil {
		t.Fatalf("go list -m gvisor.dev/gvisor: %v", err)
	}
	file := filepath.Join(strings.TrimSpace(string(out)), "pkg", "tcpip", "errors.go")
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for ty := range errnoTable {
		known[ty.Elem().Name()] = true
	}
	n := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.TYPE {
			continue
		}
		for _, s := range g.Specs {
			ts := s.(*ast.TypeSpec)
			if !strings.HasPrefix(ts.Name.Name, "Err") {
				continue
			}
			if _, isStruct := ts.Type.(*ast.StructType); !isStruct {
				continue
			}
			n++
			if !known[ts.Name.Name] {
				t.Errorf("tcpip.%s has no errno in errnoTable", ts.Name.Name)
			}
		}
	}
	if n < 40 {
		t.Fatalf("found only %d error types in %s", n, file)
	}
	if len(errnoTable) != n {
		t.Errorf("errnoTable has %d entries, gVisor declares %d error types", len(errnoTable), n)
	}
}

func TestErrnoSamples(t *testing.T) {
	for _, c := range []struct {
		err  tcpip.Error
		want syscall.Errno
	}{
		{&tcpip.ErrConnectionRefused{}, syscall.ECONNREFUSED},
		{&tcpip.ErrPortInUse{}, syscall.EADDRINUSE},
		{&tcpip.ErrWouldBlock{}, syscall.EAGAIN},
		{&tcpip.ErrBroadcastDisabled{}, syscall.EACCES},
		{&tcpip.ErrMessageTooLong{}, syscall.EMSGSIZE},
		{&tcpip.ErrClosedForReceive{}, 0},
		{nil, 0},
	} {
		if got := Errno(c.err); got != c.want {
			t.Errorf("Errno(%T) = %v, want %v", c.err, got, c.want)
		}
	}
}
