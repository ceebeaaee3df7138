package relay

import (
	"net"
	"net/netip"
	"testing"
)

// freePort is a TCP and UDP port free on 127.0.0.1 and [::1] now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// TestSyncAutoForwardsFollowsTheNamespace: the automatic forwards of
// each protocol follow the ports given, one protocol's sync leaves the
// other's alone, forwards given otherwise stay, and ports that went away
// lose their forwards.
func TestSyncAutoForwardsFollowsTheNamespace(t *testing.T) {
	g, _ := rig(t, Config{NSAddrs: []netip.Addr{netip.MustParseAddr("10.0.9.2")}})
	p1, p2 := freePort(t), freePort(t)
	manual, err := ParseForward("127.0.0.1:0:22")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.AddForward(manual); err != nil {
		t.Fatal(err)
	}
	specs := func() map[string]bool {
		m := map[string]bool{}
		for _, f := range g.Forwards() {
			m[f.String()] = true
		}
		return m
	}
	set := func(ps ...uint16) map[uint16]bool {
		m := map[uint16]bool{}
		for _, p := range ps {
			m[p] = true
		}
		return m
	}
	if err := g.SyncAutoForwards("tcp", set(p1), nil); err != nil {
		t.Fatal(err)
	}
	if err := g.SyncAutoForwards("udp", set(p2), set(p2)); err != nil {
		t.Fatal(err)
	}
	// Again: nothing changes (the UDP sync did not end the TCP forward).
	if err := g.SyncAutoForwards("tcp", set(p1), nil); err != nil {
		t.Fatal(err)
	}
	got := specs()
	tcp := Forward{Proto: "tcp", Host: netip.AddrPortFrom(netip.IPv4Unspecified(), p1), NSPort: p1}.String()
	udp := Forward{Proto: "udp", Host: netip.AddrPortFrom(netip.IPv4Unspecified(), p2), NSPort: p2}.String()
	if len(got) != 3 || !got[tcp] || !got[udp] {
		t.Fatalf("forwards %v, want the manual one, %s and %s", got, tcp, udp)
	}
	if err := g.SyncAutoForwards("tcp", nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := specs(); len(got) != 2 || got[tcp] || !got[udp] {
		t.Fatalf("after the TCP port went away: %v", got)
	}
}

// TestForwardBoundToAnInterface: a forward with Iface listens bound to
// that interface (SO_BINDTODEVICE), and one naming no interface fails.
func TestForwardBoundToAnInterface(t *testing.T) {
	g, _ := rig(t, Config{NSAddrs: []netip.Addr{netip.MustParseAddr("10.0.9.2")}})
	f := Forward{Proto: "tcp", Host: netip.MustParseAddrPort("127.0.0.1:0"), NSPort: 80, Iface: "lo"}
	if err := g.AddForward(f); err != nil {
		t.Fatalf("forward bound to lo: %v", err)
	}
	f.Iface = "tsnosuch0"
	if err := g.AddForward(f); err == nil {
		t.Fatal("a forward bound to a missing interface was made")
	}
}
