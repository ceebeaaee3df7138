package relay

import (
	"context"
	"net/netip"
	"testing"
)

// TestDialerSharesSlotsWithNewAddresses: with every slot held by dials to
// one address (a black hole), a dial to another address takes the oldest
// of them, until the slots are shared evenly; then new dials wait.
func TestDialerSharesSlotsWithNewAddresses(t *testing.T) {
	a, b, c, d, e := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"),
		netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("192.0.2.4"), netip.MustParseAddr("192.0.2.5")
	dl := newDialer(4, 3)
	ctx := context.Background()
	var held []*dialSlot
	for i := 0; i < 3; i++ {
		s := dl.start(ctx, a)
		if s == nil {
			t.Fatalf("dial %d to a refused", i)
		}
		held = append(held, s)
	}
	if dl.start(ctx, a) != nil {
		t.Fatal("a fourth dial to a got past the per-address limit of 3")
	}
	if dl.start(ctx, b) == nil {
		t.Fatal("the last free slot went unused")
	}
	// Full: c takes a's oldest slot, then d takes a's next.
	if dl.start(ctx, c) == nil || held[0].ctx.Err() == nil {
		t.Fatal("c did not take the slot of a's oldest dial")
	}
	if dl.start(ctx, d) == nil || held[1].ctx.Err() == nil {
		t.Fatal("d did not take a slot of a's")
	}
	// Now every address has one live dial: e must wait.
	if dl.start(ctx, e) != nil {
		t.Fatal("e took a slot although no address holds more than one")
	}
	if !dl.end(held[0], false) || !dl.end(held[1], false) || dl.end(held[2], false) {
		t.Fatal("end does not report which dials were evicted")
	}
	if pending, evicted := dl.stats(); pending != 3 || evicted != 2 {
		t.Fatalf("stats: %d pending, %d evicted; want 3 and 2", pending, evicted)
	}
}

// TestDialerPrefersAddressesThatAnswer: a dial to an address that
// answered recently takes a slot from an address that never has, even
// when that one holds no more dials than it.
func TestDialerPrefersAddressesThatAnswer(t *testing.T) {
	hole, good := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1")
	dl := newDialer(4, 4)
	ctx := context.Background()
	dl.end(dl.start(ctx, good), true) // it answered once
	h1, h2 := dl.start(ctx, hole), dl.start(ctx, hole)
	g1, g2 := dl.start(ctx, good), dl.start(ctx, good)
	if h1 == nil || h2 == nil || g1 == nil || g2 == nil {
		t.Fatal("four dials did not fit four slots")
	}
	g3 := dl.start(ctx, good)
	if g3 == nil || h1.ctx.Err() == nil || h2.ctx.Err() != nil {
		t.Fatal("a third dial to the good address did not take the black hole's oldest slot")
	}
	// The black hole cannot take the good address's slots back, however
	// many it holds.
	dl.end(h1, false)
	if dl.start(ctx, hole) != nil || g1.ctx.Err() != nil {
		t.Fatal("a black hole took a slot from an address that answers")
	}
}

// TestDialerWithoutContextAllocatesNothing: the flow engine's dials
// (started without a context) reuse the slots of ended ones, and an
// evicted one says so through evicted.
func TestDialerWithoutContextAllocatesNothing(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	dl := newDialer(2, 2)
	dl.end(dl.startBare(a), true) // the first slot and map entry
	if n := testing.AllocsPerRun(100, func() { dl.end(dl.startBare(a), false) }); n != 0 {
		t.Fatalf("%v allocations per dial started and ended, want 0", n)
	}
	s1, s2 := dl.startBare(b), dl.startBare(b)
	if s1 == nil || s2 == nil || s1 == s2 {
		t.Fatal("two dials to b did not get two slots")
	}
	if dl.startBare(a) == nil || !s1.evicted.Load() || s2.evicted.Load() {
		t.Fatal("a dial to a good address did not evict b's oldest dial")
	}
	if !dl.end(s1, false) {
		t.Fatal("end does not report the eviction")
	}
	if got, _ := dl.stats(); got != 2 {
		t.Fatalf("%d dials pending, want 2", got)
	}
}
