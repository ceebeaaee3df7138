package relay

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var (
	seedSrcMAC = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x64")
	seedDstMAC = tcpip.LinkAddress("\xff\xff\xff\xff\xff\xff")
)

func ether(t tcpip.NetworkProtocolNumber, payload []byte) []byte {
	b := make([]byte, header.EthernetMinimumSize+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: seedSrcMAC, DstAddr: seedDstMAC, Type: t})
	copy(b[header.EthernetMinimumSize:], payload)
	return b
}

func ip4Packet(src, dst string, proto tcpip.TransportProtocolNumber, payload []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(proto),
		SrcAddr: tcpip.AddrFrom4(netip.MustParseAddr(src).As4()), DstAddr: tcpip.AddrFrom4(netip.MustParseAddr(dst).As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(b[header.IPv4MinimumSize:], payload)
	return ether(header.IPv4ProtocolNumber, b)
}

func ip6Packet(src, dst string, proto tcpip.TransportProtocolNumber, payload []byte) []byte {
	b := make([]byte, header.IPv6MinimumSize+len(payload))
	header.IPv6(b).Encode(&header.IPv6Fields{PayloadLength: uint16(len(payload)), TransportProtocol: proto, HopLimit: 64,
		SrcAddr: tcpip.AddrFrom16(netip.MustParseAddr(src).As16()), DstAddr: tcpip.AddrFrom16(netip.MustParseAddr(dst).As16())})
	copy(b[header.IPv6MinimumSize:], payload)
	return ether(header.IPv6ProtocolNumber, b)
}

func pseudo(src, dst string, proto tcpip.TransportProtocolNumber, n int) uint16 {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	return header.PseudoHeaderChecksum(proto, tcpip.AddrFromSlice(s.AsSlice()), tcpip.AddrFromSlice(d.AsSlice()), uint16(n))
}

func tcpSeg(src, dst string, sport, dport uint16, flags header.TCPFlags, data []byte) []byte {
	b := make([]byte, header.TCPMinimumSize+len(data))
	tc := header.TCP(b)
	tc.Encode(&header.TCPFields{SrcPort: sport, DstPort: dport, SeqNum: 1000, DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 65535})
	copy(b[header.TCPMinimumSize:], data)
	tc.SetChecksum(^checksum.Checksum(b, pseudo(src, dst, header.TCPProtocolNumber, len(b))))
	return b
}

func udpDgram(src, dst string, sport, dport uint16, data []byte) []byte {
	b := make([]byte, header.UDPMinimumSize+len(data))
	u := header.UDP(b)
	u.Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(len(b))})
	copy(b[header.UDPMinimumSize:], data)
	u.SetChecksum(^checksum.Checksum(b, pseudo(src, dst, header.UDPProtocolNumber, len(b))))
	return b
}

func icmp4Echo(data []byte) []byte {
	b := make([]byte, header.ICMPv4MinimumSize+len(data))
	ic := header.ICMPv4(b)
	ic.SetType(header.ICMPv4Echo)
	ic.SetIdent(7)
	ic.SetSequence(1)
	copy(ic.Payload(), data)
	ic.SetChecksum(^checksum.Checksum(b, 0))
	return b
}

func icmp6Echo(src, dst string, data []byte) []byte {
	b := make([]byte, header.ICMPv6EchoMinimumSize+len(data))
	ic := header.ICMPv6(b)
	ic.SetType(header.ICMPv6EchoRequest)
	ic.SetIdent(7)
	ic.SetSequence(1)
	copy(b[header.ICMPv6EchoMinimumSize:], data)
	ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: b,
		Src: tcpip.AddrFrom16(netip.MustParseAddr(src).As16()), Dst: tcpip.AddrFrom16(netip.MustParseAddr(dst).As16())}))
	return b
}

// frameSeeds are well-formed frames of each kind a namespace sends a
// gateway: the fuzzer mutates them into malformed ones.
func frameSeeds() [][]byte {
	const ns4, gw4, far4 = "10.0.2.100", "10.0.2.2", "198.51.100.1"
	const ns6, gw6, far6 = "fd00::100", "fd00::2", "2001:db8::1"
	arp := make([]byte, header.ARPSize)
	a := header.ARP(arp)
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPRequest)
	copy(a.HardwareAddressSender(), seedSrcMAC)
	copy(a.ProtocolAddressSender(), netip.MustParseAddr(ns4).AsSlice())
	copy(a.ProtocolAddressTarget(), netip.MustParseAddr(gw4).AsSlice())
	return [][]byte{
		ether(header.ARPProtocolNumber, arp),
		ip4Packet(ns4, far4, header.TCPProtocolNumber, tcpSeg(ns4, far4, 40000, 80, header.TCPFlagSyn, nil)),
		ip4Packet(ns4, far4, header.TCPProtocolNumber, tcpSeg(ns4, far4, 40001, 81, header.TCPFlagSyn, nil)),
		ip4Packet(ns4, far4, header.TCPProtocolNumber, tcpSeg(ns4, far4, 40002, 82, header.TCPFlagAck|header.TCPFlagPsh, []byte("data"))),
		ip4Packet(ns4, gw4, header.TCPProtocolNumber, tcpSeg(ns4, gw4, 40003, 7, header.TCPFlagSyn, nil)),
		ip4Packet(ns4, far4, header.UDPProtocolNumber, udpDgram(ns4, far4, 5000, 53, []byte("query"))),
		ip4Packet(ns4, far4, header.UDPProtocolNumber, udpDgram(ns4, far4, 5001, 54, []byte("x"))),
		ip4Packet(ns4, far4, header.ICMPv4ProtocolNumber, icmp4Echo([]byte("ping"))),
		ip4Packet(ns4, gw4, header.ICMPv4ProtocolNumber, icmp4Echo([]byte("ping"))),
		ip6Packet(ns6, far6, header.TCPProtocolNumber, tcpSeg(ns6, far6, 40000, 80, header.TCPFlagSyn, nil)),
		ip6Packet(ns6, far6, header.UDPProtocolNumber, udpDgram(ns6, far6, 5000, 53, []byte("query"))),
		ip6Packet(ns6, far6, header.ICMPv6ProtocolNumber, icmp6Echo(ns6, far6, []byte("ping"))),
		ip6Packet(ns6, gw6, header.ICMPv6ProtocolNumber, icmp6Echo(ns6, gw6, []byte("ping"))),
	}
}
