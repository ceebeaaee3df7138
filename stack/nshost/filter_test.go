package nshost

import (
	"net/netip"
	"testing"
)

func frame(ethType uint16, ip []byte) []byte {
	f := make([]byte, 14, 14+len(ip))
	f[12], f[13] = byte(ethType>>8), byte(ethType)
	return append(f, ip...)
}

func ipv4From(src string) []byte {
	p := make([]byte, 20)
	p[0] = 0x45
	a := netip.MustParseAddr(src).As4()
	copy(p[12:16], a[:])
	return p
}

func ipv6From(src string) []byte {
	p := make([]byte, 40)
	p[0] = 0x60
	a := netip.MustParseAddr(src).As16()
	copy(p[8:24], a[:])
	return p
}

func TestSourceFilter(t *testing.T) {
	f := SourceFilter([]netip.Addr{netip.MustParseAddr("10.0.2.100"), netip.MustParseAddr("fd00::100")})
	for _, c := range []struct {
		name string
		fr   []byte
		want bool
	}{
		{"v4 own", frame(0x0800, ipv4From("10.0.2.100")), true},
		{"v4 spoofed", frame(0x0800, ipv4From("10.0.2.101")), false},
		{"v4 unspecified", frame(0x0800, ipv4From("0.0.0.0")), true},
		{"v6 own", frame(0x86dd, ipv6From("fd00::100")), true},
		{"v6 link-local", frame(0x86dd, ipv6From("fe80::1")), true},
		{"v6 unspecified (DAD)", frame(0x86dd, ipv6From("::")), true},
		{"v6 spoofed", frame(0x86dd, ipv6From("2001:db8::5")), false},
		{"arp", frame(0x0806, make([]byte, 28)), true},
		{"v4 runt", frame(0x0800, make([]byte, 10)), false},
		{"v6 runt", frame(0x86dd, make([]byte, 30)), false},
		{"no header", make([]byte, 10), false},
	} {
		if got := f(c.fr); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestAddGuestWidensTheFilter(t *testing.T) {
	set := NewSourceSet([]netip.Addr{netip.MustParseAddr("10.0.2.100")})
	h := &Host{
		StackAddrs: []netip.Prefix{netip.MustParsePrefix("10.0.2.2/24"), netip.MustParsePrefix("fd00::2/64")},
		NSAddrs:    []netip.Prefix{netip.MustParsePrefix("10.0.2.100/24"), netip.MustParsePrefix("fd00::100/64")},
		extra:      []netip.Prefix{netip.MustParsePrefix("10.0.2.3/24")},
		sources:    set,
	}
	for _, bad := range []string{"10.0.2.2", "10.0.2.3", "fd00::2", "10.0.2.0", "10.0.2.255", "10.0.3.7", "192.0.2.1"} {
		if err := h.AddGuest(netip.MustParseAddr(bad)); err == nil {
			t.Errorf("AddGuest(%s) accepted", bad)
		}
	}
	if set.Allows(frame(0x0800, ipv4From("10.0.2.101"))) {
		t.Fatal("10.0.2.101 passes before AddGuest")
	}
	for _, good := range []string{"10.0.2.101", "fd00::101"} {
		if err := h.AddGuest(netip.MustParseAddr(good)); err != nil {
			t.Fatalf("AddGuest(%s): %v", good, err)
		}
	}
	h.AddGuest(netip.MustParseAddr("10.0.2.101")) // twice: stored once
	if !set.Allows(frame(0x0800, ipv4From("10.0.2.101"))) || !set.Allows(frame(0x86dd, ipv6From("fd00::101"))) {
		t.Fatal("the added addresses do not pass the filter")
	}
	if l := set.set.Load(); len(l.v4) != 2 || len(l.v6) != 1 {
		t.Fatalf("the set holds %d IPv4 and %d IPv6 addresses, want 2 and 1", len(l.v4), len(l.v6))
	}
	if set.Allows(frame(0x0800, ipv4From("10.0.2.102"))) {
		t.Fatal("other sources pass")
	}
}
