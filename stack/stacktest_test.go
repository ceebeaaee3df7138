package stack_test

import (
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack"
)

func TestCloseIsIdempotentAndLeaksNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	a, b := link.Pipe()
	ea, err := link.New(link.Options{Devices: []link.Device{a}})
	if err != nil {
		t.Fatal(err)
	}
	eb, err := link.New(link.Options{Devices: []link.Device{b}})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := stack.New(stack.Config{Links: []stack.LinkConfig{{Name: "p0", Endpoint: ea, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}}}})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := stack.New(stack.Config{Links: []stack.LinkConfig{{Name: "p0", Endpoint: eb, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(sa.NICs()); got != 2 {
		t.Fatalf("NICs = %d, want loopback + 1", got)
	}
	n, ok := sa.NICByName("p0")
	if !ok || len(n.Addrs) != 2 || !n.Addrs[1].Addr().IsLinkLocalUnicast() {
		t.Fatalf("p0 = %+v, want 10.9.0.1/24 and a link-local", n)
	}
	sa.Close()
	sa.Close()
	sb.Close()
	waitGoroutines(t, before)
}

func TestBadConfig(t *testing.T) {
	if _, err := stack.New(stack.Config{MaxSockets: -1}); err == nil {
		t.Fatal("negative MaxSockets accepted")
	}
	if _, err := stack.New(stack.Config{Links: []stack.LinkConfig{{Name: "x"}}}); err == nil {
		t.Fatal("link without endpoint accepted")
	}
	a, _ := link.Pipe()
	ea, _ := link.New(link.Options{Devices: []link.Device{a}})
	if _, err := stack.New(stack.Config{Links: []stack.LinkConfig{{Name: "lo", Endpoint: ea}}}); err == nil {
		t.Fatal("a second NIC named lo accepted")
	}
	for _, q := range []int{-1, stack.MaxTxQueues + 1} {
		a, _ := link.Pipe()
		ea, _ := link.New(link.Options{Devices: []link.Device{a}})
		_, err := stack.New(stack.Config{Links: []stack.LinkConfig{{Name: "p0", Endpoint: ea, TxQueues: q}}})
		if err == nil || !strings.Contains(err.Error(), "TxQueues") {
			t.Fatalf("TxQueues %d: err = %v, want an error naming TxQueues", q, err)
		}
	}
}

// waitGoroutines waits until the goroutine count is back to n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, want %d\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
