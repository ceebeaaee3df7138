package relay

import (
	"fmt"
	"net/netip"
	"testing"
)

// TestRefusalLogIsBounded: each refused destination is logged once, up to
// maxRefusalKeys of them; beyond that refusals are counted, with one line
// per limitLogEvery, and the set stops growing.
func TestRefusalLogIsBounded(t *testing.T) {
	var lines []string
	g := New(Config{Logf: func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) }})
	for i := 0; i < maxRefusalKeys+500; i++ {
		dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}), 80)
		g.refused("tcp", dst, "denied")
		g.refused("tcp", dst, "denied") // the same again: not logged
	}
	if len(lines) != maxRefusalKeys+1 {
		t.Fatalf("%d lines for %d destinations refused twice each, want %d (one each, then one for the rest)", len(lines), maxRefusalKeys+500, maxRefusalKeys+1)
	}
	if n := len(g.logs.refused); n != maxRefusalKeys {
		t.Fatalf("the set holds %d keys, want at most %d", n, maxRefusalKeys)
	}
	if g.Stats().Refused != 2*(maxRefusalKeys+500) {
		t.Fatalf("refused counted %d", g.Stats().Refused)
	}
}
