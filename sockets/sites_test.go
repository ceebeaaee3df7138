package sockets_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack"
)

// leaky makes n sockets and forgets them, as a program that never
// closes what it opens; it returns the line that makes them and the
// first error.
func leaky(st *stack.Stack, n int) (line int, err error) {
	_, _, line, _ = runtime.Caller(0)
	line += 3 // the sockets.New below
	for i := 0; i < n; i++ {
		if _, err := sockets.New(st, sockets.AF_INET, sockets.SOCK_DGRAM, 0); err != nil {
			return line, err
		}
	}
	return line, nil
}

// TestFullTableNamesWhereTheSocketsWereMade: with SocketSites a loop
// that forgets to close fills a 16-slot table, and the EMFILE names
// that loop's line with its count; the table lists the site of each
// socket.
func TestFullTableNamesWhereTheSocketsWereMade(t *testing.T) {
	st, err := stack.New(stack.Config{MaxSockets: 16, SocketSites: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, _, keepLine, _ := runtime.Caller(0)
	keep, err := sockets.New(st, sockets.AF_INET, sockets.SOCK_STREAM, 0) // one made elsewhere
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	line, err := leaky(st, 100)
	if !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("the 17th socket: %v, want EMFILE", err)
	}
	want := fmt.Sprintf("sites_test.go:%d (15)", line)
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("EMFILE: %q\nwant it to name %q", err, want)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("sites_test.go:%d (1)", keepLine+1)) {
		t.Errorf("EMFILE: %q\nwant it to name the socket kept at line %d too", err, keepLine+1)
	}
	tab := sockets.Table(st)
	if tab.InUse != 16 || len(tab.Sockets) != 16 {
		t.Fatalf("table: %d in use, %d listed", tab.InUse, len(tab.Sockets))
	}
	for _, s := range tab.Sockets[1:] {
		if !strings.HasSuffix(s.Site, fmt.Sprintf("sites_test.go:%d", line)) || len(s.Stack) == 0 || !strings.Contains(s.Stack[0], "leaky") {
			t.Fatalf("socket %d: site %q, stack %q; want line %d in leaky", s.FD, s.Site, s.Stack, line)
		}
	}
}

// TestSitesAreOffByDefault: without SocketSites nothing is recorded and
// EMFILE says only how full the table is.
func TestSitesAreOffByDefault(t *testing.T) {
	st, err := stack.New(stack.Config{MaxSockets: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = leaky(st, 5)
	if !errors.Is(err, syscall.EMFILE) || strings.Contains(err.Error(), "made at") {
		t.Fatalf("EMFILE without sites: %v", err)
	}
	if s := sockets.Table(st).Sockets[0]; s.Site != "" || s.Stack != nil {
		t.Fatalf("a site recorded without SocketSites: %+v", s)
	}
}
