package relay

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var nsMAC = tcpip.LinkAddress("\x02\x00\x00\x00\x01\x00")

// ndpFrame is an NDP message (type, then body after the 4-byte ICMPv6
// header) from src to dst with hop limit 255, from nsMAC.
func ndpFrame(typ header.ICMPv6Type, src, dst netip.Addr, body []byte) []byte {
	ic := make([]byte, header.ICMPv6HeaderSize+len(body))
	header.ICMPv6(ic).SetType(typ)
	copy(ic[header.ICMPv6HeaderSize:], body)
	s, d := tcpip.AddrFrom16(src.As16()), tcpip.AddrFrom16(dst.As16())
	header.ICMPv6(ic).SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: s, Dst: d}))
	b := make([]byte, header.EthernetMinimumSize+header.IPv6MinimumSize+len(ic))
	dstMAC := header.EthernetAddressFromMulticastIPv6Address(d)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: nsMAC, DstAddr: dstMAC, Type: header.IPv6ProtocolNumber})
	header.IPv6(b[header.EthernetMinimumSize:]).Encode(&header.IPv6Fields{PayloadLength: uint16(len(ic)),
		TransportProtocol: header.ICMPv6ProtocolNumber, HopLimit: header.NDPHopLimit, SrcAddr: s, DstAddr: d})
	copy(b[header.EthernetMinimumSize+header.IPv6MinimumSize:], ic)
	return b
}

// routerSolicit is an RS from src (with the source link-layer address
// option unless src is ::).
func routerSolicit(src netip.Addr) []byte {
	body := make([]byte, 4)
	if !src.IsUnspecified() {
		body = append(body, 1, 1)
		body = append(body, nsMAC...)
	}
	return ndpFrame(header.ICMPv6RouterSolicit, src, netip.MustParseAddr("ff02::2"), body)
}

// dadSolicit is the neighbor solicitation of duplicate address
// detection for target.
func dadSolicit(target netip.Addr) []byte {
	body := make([]byte, 4, 20)
	t16 := target.As16()
	body = append(body, t16[:]...)
	return ndpFrame(header.ICMPv6NeighborSolicit, netip.IPv6Unspecified(), addrFromTCPIP(header.SolicitedNodeAddr(tcpip.AddrFrom16(t16))), body)
}

// routerAdvert parses a frame of the stack's if it is an RA.
func routerAdvert(t *testing.T, f []byte) (eth header.Ethernet, ip header.IPv6, ra header.NDPRouterAdvert, ok bool) {
	eth = header.Ethernet(f)
	if len(f) < header.EthernetMinimumSize+header.IPv6MinimumSize+header.ICMPv6HeaderSize+header.NDPRAMinimumSize || eth.Type() != header.IPv6ProtocolNumber {
		return nil, nil, nil, false
	}
	ip = header.IPv6(f[header.EthernetMinimumSize:])
	ic := header.ICMPv6(ip.Payload())
	if ip.NextHeader() != uint8(header.ICMPv6ProtocolNumber) || ic.Type() != header.ICMPv6RouterAdvert {
		return nil, nil, nil, false
	}
	if ic.Checksum() != header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}) {
		t.Fatalf("an RA with a bad checksum")
	}
	return eth, ip, header.NDPRouterAdvert(ic.MessageBody()), true
}

// raOptions reads an RA's options with gVisor's parser.
type raOptions struct {
	srcMAC   tcpip.LinkAddress
	prefixes []header.NDPPrefixInformation
	dns      []tcpip.Address
	dnsLife  time.Duration
}

func parseRA(t *testing.T, ra header.NDPRouterAdvert) raOptions {
	t.Helper()
	var o raOptions
	it, err := ra.Options().Iter(true)
	if err != nil {
		t.Fatalf("RA options: %v", err)
	}
	for {
		opt, done, err := it.Next()
		if err != nil {
			t.Fatalf("RA options: %v", err)
		}
		if done {
			return o
		}
		switch opt := opt.(type) {
		case header.NDPSourceLinkLayerAddressOption:
			o.srcMAC = opt.EthernetAddress()
		case header.NDPPrefixInformation:
			o.prefixes = append(o.prefixes, opt)
		case header.NDPRecursiveDNSServer:
			o.dns, err = opt.Addresses()
			if err != nil {
				t.Fatal(err)
			}
			o.dnsLife = opt.Lifetime()
		}
	}
}

// TestSLAACRouterAdvertisements: a router solicitation gets an RA from
// the stack's link-local address with the network, the DNS server, the
// MTU and the source link-layer address, as Linux reads them (gVisor's
// parser checks the wire format); unsolicited RAs go to all nodes at
// start; duplicate address detection of an address in the network lets
// it through the source filter, and gVisor does not answer it (which
// would fail the namespace's DAD).
func TestSLAACRouterAdvertisements(t *testing.T) {
	r := newWireRig(t, "10.0.2.0/24", "fd00::/64", Config{})
	gwLL := header.LinkLocalAddr(r.g.st.GV().NICInfo()[2].LinkAddress)
	check := func(what string, wantDst tcpip.Address, wantMAC tcpip.LinkAddress) {
		t.Helper()
		var eth header.Ethernet
		var ip header.IPv6
		var ra header.NDPRouterAdvert
		r.next(t, what, func(f []byte) bool {
			var ok bool
			eth, ip, ra, ok = routerAdvert(t, f)
			return ok && ip.DestinationAddress() == wantDst
		})
		if eth.DestinationAddress() != wantMAC || ip.SourceAddress() != gwLL || ip.HopLimit() != 255 {
			t.Fatalf("%s: from %s to %s (MAC %s), hop limit %d; want from %s to MAC %s, 255", what,
				ip.SourceAddress(), ip.DestinationAddress(), eth.DestinationAddress(), ip.HopLimit(), gwLL, wantMAC)
		}
		if ra.ManagedAddrConfFlag() || ra.OtherConfFlag() || ra.RouterLifetime() != 1800*time.Second {
			t.Errorf("%s: M %v O %v lifetime %v; want no flags, 1800 s", what, ra.ManagedAddrConfFlag(), ra.OtherConfFlag(), ra.RouterLifetime())
		}
		o := parseRA(t, ra)
		if o.srcMAC != eth.SourceAddress() {
			t.Errorf("%s: source link-layer %s (frame from %s)", what, o.srcMAC, eth.SourceAddress())
		}
		if len(o.prefixes) != 1 {
			t.Fatalf("%s: %d prefixes, want 1", what, len(o.prefixes))
		}
		p := o.prefixes[0]
		if p.Subnet().String() != "fd00::/64" || !p.OnLinkFlag() || !p.AutonomousAddressConfigurationFlag() ||
			p.ValidLifetime() != 24*time.Hour || p.PreferredLifetime() != 4*time.Hour {
			t.Errorf("%s: prefix %s on-link %v autonomous %v valid %v preferred %v", what, p.Subnet(), p.OnLinkFlag(),
				p.AutonomousAddressConfigurationFlag(), p.ValidLifetime(), p.PreferredLifetime())
		}
		if len(o.dns) != 1 || o.dns[0].String() != "fd00::3" || o.dnsLife != 1800*time.Second {
			t.Errorf("%s: RDNSS %v lifetime %v, want fd00::3 1800 s", what, o.dns, o.dnsLife)
		}
		// gVisor's parser skips the MTU option: read it by hand.
		if got := mtuOption(ra.Options()); got != 1500 {
			t.Errorf("%s: MTU option %d, want 1500", what, got)
		}
	}
	check("unsolicited RA at start", header.IPv6AllNodesMulticastAddress, header.EthernetAddressFromMulticastIPv6Address(header.IPv6AllNodesMulticastAddress))

	nsLL := addrFromTCPIP(header.LinkLocalAddr(nsMAC))
	if err := r.wire.WriteFrame([][]byte{routerSolicit(nsLL)}); err != nil {
		t.Fatal(err)
	}
	check("RA answering an RS from fe80::", tcpip.AddrFrom16(nsLL.As16()), nsMAC)
	if err := r.wire.WriteFrame([][]byte{routerSolicit(netip.IPv6Unspecified())}); err != nil {
		t.Fatal(err)
	}
	check("RA answering an RS from ::", header.IPv6AllNodesMulticastAddress, header.EthernetAddressFromMulticastIPv6Address(header.IPv6AllNodesMulticastAddress))
	// The count goes up once the frame is out: wait for the last one.
	for deadline := time.Now().Add(2 * time.Second); r.g.ra.sent.Load() < 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := r.g.ra.sent.Load(); n < 3 {
		t.Errorf("%d RAs counted, want 3", n)
	}

	slaac := netip.MustParseAddr("fd00::ff:fe00:100")
	for _, a := range []netip.Addr{slaac, nsLL, netip.MustParseAddr("fd01::1")} {
		if err := r.wire.WriteFrame([][]byte{dadSolicit(a)}); err != nil {
			t.Fatal(err)
		}
	}
	r.none(t, "a neighbor advertisement for the namespace's tentative address", 300*time.Millisecond, func(f []byte) bool {
		ip := header.IPv6(f[header.EthernetMinimumSize:])
		return header.Ethernet(f).Type() == header.IPv6ProtocolNumber && ip.NextHeader() == uint8(header.ICMPv6ProtocolNumber) &&
			header.ICMPv6(ip.Payload()).Type() == header.ICMPv6NeighborAdvert
	})
	if got := r.guestList(); !slices.Equal(got, []netip.Addr{slaac}) {
		t.Fatalf("addresses let through after DAD: %v, want only %s (in the network)", got, slaac)
	}
}

// mtuOption is the MTU option of opts (0: none).
func mtuOption(opts header.NDPOptions) uint32 {
	b := []byte(opts)
	for len(b) >= 8 && b[1] > 0 && int(b[1])*8 <= len(b) {
		if b[0] == 5 {
			return uint32(b[4])<<24 | uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7])
		}
		b = b[int(b[1])*8:]
	}
	return 0
}

// TestSLAACOffWithNoSLAACOrNoRA: NoSLAAC advertises the network without
// the autonomous flag; NoRA answers no solicitation.
func TestSLAACOffWithNoSLAACOrNoRA(t *testing.T) {
	r := newWireRig(t, "10.0.2.0/24", "fd00::/64", Config{NoSLAAC: true})
	var ra header.NDPRouterAdvert
	r.next(t, "RA", func(f []byte) bool {
		var ok bool
		_, _, ra, ok = routerAdvert(t, f)
		return ok
	})
	if o := parseRA(t, ra); len(o.prefixes) != 1 || o.prefixes[0].AutonomousAddressConfigurationFlag() || !o.prefixes[0].OnLinkFlag() {
		t.Fatalf("with NoSLAAC: prefixes %v", o.prefixes)
	}

	r = newWireRig(t, "10.0.2.0/24", "fd00::/64", Config{NoRA: true})
	if err := r.wire.WriteFrame([][]byte{routerSolicit(addrFromTCPIP(header.LinkLocalAddr(nsMAC)))}); err != nil {
		t.Fatal(err)
	}
	r.none(t, "an RA with NoRA", 300*time.Millisecond, func(f []byte) bool {
		_, _, _, ok := routerAdvert(t, f)
		return ok
	})
}
