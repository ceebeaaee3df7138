package sockets_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack"
)

func TestGetAddrInfoLocal(t *testing.T) {
	p := newPair(t, 0)
	st := p.a
	sockets.SetResolver(st, sockets.ResolverConfig{Hosts: map[string][]netip.Addr{
		"Box.Lan": {netip.MustParseAddr("10.0.9.2"), netip.MustParseAddr("fd09::2")},
	}})
	check := func(host, port string, f sockets.Family, typ sockets.Type, flags int, want string) {
		t.Helper()
		ais, err := sockets.GetAddrInfo(st, host, port, f, typ, 0, flags)
		if err != nil {
			t.Fatalf("GetAddrInfo(%q, %q): %v", host, port, err)
		}
		var got []string
		for _, ai := range ais {
			got = append(got, ai.Addr.String()+"/"+ai.Type.String())
		}
		if strings.Join(got, " ") != want {
			t.Fatalf("GetAddrInfo(%q, %q) = %s\nwant %s", host, port, strings.Join(got, " "), want)
		}
	}
	check("10.0.9.1", "80", sockets.AF_UNSPEC, sockets.SOCK_STREAM, 0, "10.0.9.1:80/SOCK_STREAM")
	check("fd09::1", "domain", sockets.AF_INET6, 0, 0, "[fd09::1]:53/SOCK_STREAM [fd09::1]:53/SOCK_DGRAM")
	check("localhost", "7", sockets.AF_INET, sockets.SOCK_DGRAM, 0, "127.0.0.1:7/SOCK_DGRAM")
	check("box.lan.", "22", sockets.AF_UNSPEC, sockets.SOCK_STREAM, 0, "[fd09::2]:22/SOCK_STREAM 10.0.9.2:22/SOCK_STREAM")
	check("", "8000", sockets.AF_INET, sockets.SOCK_STREAM, sockets.AI_PASSIVE, "0.0.0.0:8000/SOCK_STREAM")
	check("", "8000", sockets.AF_INET6, sockets.SOCK_STREAM, 0, "[::1]:8000/SOCK_STREAM")
	check("10.0.9.1", "80", sockets.AF_INET6, sockets.SOCK_STREAM, sockets.AI_V4MAPPED, "[::ffff:10.0.9.1]:80/SOCK_STREAM")

	if ais, err := sockets.GetAddrInfo(st, "10.0.9.1", nil, sockets.AF_INET, sockets.SOCK_DGRAM, 0, 0); err != nil || ais[0].Addr.Port != 0 {
		t.Fatalf("port nil: %+v %v", ais, err)
	}
	if ais, err := sockets.GetAddrInfo(st, "10.0.9.1", 443, sockets.AF_INET, sockets.SOCK_STREAM, 0, 0); err != nil || ais[0].Addr.Port != 443 {
		t.Fatalf("port 443: %+v %v", ais, err)
	}
	if _, err := sockets.GetAddrInfo(st, "10.0.9.1", 3.5, sockets.AF_INET, 0, 0, 0); !errors.Is(err, sockets.EAI_SERVICE) {
		t.Fatalf("port 3.5: %v", err)
	}
	if _, err := sockets.GetAddrInfo(st, "10.0.9.1", 70000, sockets.AF_INET, 0, 0, 0); !errors.Is(err, sockets.EAI_SERVICE) {
		t.Fatalf("port 70000: %v", err)
	}
	for _, c := range []struct {
		host, port string
		f          sockets.Family
		typ        sockets.Type
		proto      int
		flags      int
		want       sockets.GAIErrno
	}{
		{"box.lan", "80", sockets.AF_UNSPEC, 0, 0, sockets.AI_NUMERICHOST, sockets.EAI_NONAME},
		{"name.example", "80", sockets.AF_UNSPEC, 0, 0, 0, sockets.EAI_NONAME},
		{"10.0.9.1", "80", 99, 0, 0, 0, sockets.EAI_FAMILY},
		{"10.0.9.1", "80", sockets.AF_UNSPEC, sockets.SOCK_RAW, 0, 0, sockets.EAI_SOCKTYPE},
		{"10.0.9.1", "no-such-service", sockets.AF_UNSPEC, 0, 0, 0, sockets.EAI_SERVICE},
		{"10.0.9.1", "70000", sockets.AF_UNSPEC, 0, 0, 0, sockets.EAI_SERVICE},
		{"10.0.9.1", "http", sockets.AF_UNSPEC, 0, 0, sockets.AI_NUMERICSERV, sockets.EAI_NONAME},
		{"10.0.9.1", "80", sockets.AF_UNSPEC, 0, 0, 0x8000, sockets.EAI_BADFLAGS},
		{"10.0.9.1", "80", sockets.AF_INET6, 0, 0, 0, sockets.EAI_ADDRFAMILY},
		{"", "", sockets.AF_UNSPEC, 0, 0, 0, sockets.EAI_NONAME},
		{"10.0.9.1", "80", sockets.AF_UNSPEC, sockets.SOCK_STREAM, sockets.IPPROTO_UDP, 0, sockets.EAI_SERVICE},
	} {
		_, err := sockets.GetAddrInfo(st, c.host, c.port, c.f, c.typ, c.proto, c.flags)
		var ge *sockets.GAIError
		if !errors.As(err, &ge) || ge.Code != c.want || !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.want.Name()) {
			t.Errorf("GetAddrInfo(%q, %q, %v, %v, %d, %#x) = %v, want %s", c.host, c.port, c.f, c.typ, c.proto, c.flags, err, c.want.Name())
		}
	}
}

func TestGetAddrInfoPrefersIPv4WithoutIPv6Route(t *testing.T) {
	d, _ := link.Pipe()
	ep, _ := link.New(link.Options{Devices: []link.Device{d}})
	st, err := stack.New(stack.Config{Links: []stack.LinkConfig{{Endpoint: ep, Addrs: []netip.Prefix{netip.MustParsePrefix("10.1.0.1/24")}, NoLinkLocal: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sockets.SetResolver(st, sockets.ResolverConfig{Hosts: map[string][]netip.Addr{
		"dual": {netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("10.1.0.9")},
	}})
	ais, err := sockets.GetAddrInfo(st, "dual", "1", sockets.AF_UNSPEC, sockets.SOCK_STREAM, 0, 0)
	if err != nil || len(ais) != 2 || ais[0].Family != sockets.AF_INET {
		t.Fatalf("without an IPv6 route: %+v %v; want IPv4 first", ais, err)
	}
}
