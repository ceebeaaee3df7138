package relay

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// A segment is one TCP segment or UDP datagram of the namespace, parsed
// from its frame by the flow engine (engine.go). Its payload is a view
// of the frame.
type segment struct {
	udp      bool // a UDP datagram: only the addresses, ports and payload are set
	v6       bool
	src, dst [16]byte // IPv4 in the first 4 bytes
	sport    uint16
	dport    uint16
	seq, ack uint32
	flags    header.TCPFlags
	wnd      uint16
	mss      uint16 // from a SYN's options
	wscale   int8   // from a SYN's options (-1: none)
	sackOK   bool   // from a SYN's options: SACK permitted
	srcMAC   [6]byte
	payload  []byte
}

const (
	ethHdrLen  = header.EthernetMinimumSize
	ip4HdrLen  = header.IPv4MinimumSize
	ip6HdrLen  = header.IPv6MinimumSize
	tcpHdrLen  = header.TCPMinimumSize
	udpHdrLen  = header.UDPMinimumSize
	fragHdrLen = header.IPv6FragmentHeaderSize
	synOptsLen = 8 // MSS (4) + NOP + window scale (3)
	// maxSACKBlocks: the SACK blocks an ACK of ours carries at most
	// (with 2 NOPs, 4 + 8 each: 28 bytes of options).
	maxSACKBlocks = 3
	maxOptsLen    = 4 + 8*maxSACKBlocks
	maxHdrLen     = ethHdrLen + ip6HdrLen + tcpHdrLen + maxOptsLen
)

// parseSegment parses an Ethernet frame holding a TCP segment or a UDP
// datagram over IPv4 (unfragmented) or IPv6 (no extension headers) into
// s. It returns false for anything else, and for one whose checksums
// fail when verify is set: the stack then sees the frame as before.
func parseSegment(frame []byte, verify bool, s *segment) bool {
	if len(frame) < ethHdrLen {
		return false
	}
	var ip, tcp []byte
	switch binary.BigEndian.Uint16(frame[12:]) {
	case uint16(header.IPv4ProtocolNumber):
		ip = frame[ethHdrLen:]
		if len(ip) < ip4HdrLen || ip[0]>>4 != 4 {
			return false
		}
		ihl := int(ip[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if ihl < ip4HdrLen || total < ihl || total > len(ip) || !transport(ip[9]) {
			return false
		}
		if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 { // MF or an offset: a fragment
			return false
		}
		if verify && checksum.Checksum(ip[:ihl], 0) != 0xffff {
			return false
		}
		s.v6, s.udp = false, ip[9] == uint8(header.UDPProtocolNumber)
		s.src, s.dst = [16]byte{}, [16]byte{}
		copy(s.src[:4], ip[12:16])
		copy(s.dst[:4], ip[16:20])
		ip = ip[:total]
		tcp = ip[ihl:]
	case uint16(header.IPv6ProtocolNumber):
		ip = frame[ethHdrLen:]
		if len(ip) < ip6HdrLen || ip[0]>>4 != 6 || !transport(ip[6]) {
			return false
		}
		plen := int(binary.BigEndian.Uint16(ip[4:]))
		if ip6HdrLen+plen > len(ip) {
			return false
		}
		s.v6, s.udp = true, ip[6] == uint8(header.UDPProtocolNumber)
		copy(s.src[:], ip[8:24])
		copy(s.dst[:], ip[24:40])
		ip = ip[:ip6HdrLen+plen]
		tcp = ip[ip6HdrLen:]
	default:
		return false
	}
	if s.udp {
		return parseDatagram(frame, tcp, verify, s)
	}
	if len(tcp) < tcpHdrLen {
		return false
	}
	off := int(tcp[12]>>4) * 4
	if off < tcpHdrLen || off > len(tcp) {
		return false
	}
	if verify && s.tcpChecksum(tcp) != 0xffff {
		return false
	}
	copy(s.srcMAC[:], frame[6:12])
	s.sport = binary.BigEndian.Uint16(tcp[0:])
	s.dport = binary.BigEndian.Uint16(tcp[2:])
	s.seq = binary.BigEndian.Uint32(tcp[4:])
	s.ack = binary.BigEndian.Uint32(tcp[8:])
	s.flags = header.TCPFlags(tcp[13])
	s.wnd = binary.BigEndian.Uint16(tcp[14:])
	s.payload = tcp[off:]
	s.mss, s.wscale, s.sackOK = 0, -1, false
	if s.flags&header.TCPFlagSyn != 0 {
		opts := header.ParseSynOptions(tcp[tcpHdrLen:off], s.flags&header.TCPFlagAck != 0)
		s.mss = opts.MSS // 536 where the SYN names none (RFC 1122)
		s.wscale = int8(opts.WS)
		s.sackOK = opts.SACKPermitted
	}
	return true
}

// transport says whether an IP protocol number is one the engine takes.
func transport(p uint8) bool {
	return p == uint8(header.TCPProtocolNumber) || p == uint8(header.UDPProtocolNumber)
}

// parseDatagram parses the UDP datagram udp of frame into s.
func parseDatagram(frame, udp []byte, verify bool, s *segment) bool {
	if len(udp) < udpHdrLen {
		return false
	}
	n := int(binary.BigEndian.Uint16(udp[4:]))
	if n < udpHdrLen || n > len(udp) {
		return false
	}
	udp = udp[:n]
	if verify {
		sum := binary.BigEndian.Uint16(udp[6:])
		if sum == 0 && s.v6 { // IPv6 requires one (RFC 8200 8.1)
			return false
		}
		if sum != 0 && checksum.Checksum(udp, pseudoSumOf(header.UDPProtocolNumber, s.v6, s.src[:], s.dst[:], n)) != 0xffff {
			return false
		}
	}
	copy(s.srcMAC[:], frame[6:12])
	s.sport = binary.BigEndian.Uint16(udp[0:])
	s.dport = binary.BigEndian.Uint16(udp[2:])
	s.payload = udp[udpHdrLen:]
	return true
}

// tcpChecksum is the checksum over the pseudo-header and tcp (0xffff
// when it is right).
func (s *segment) tcpChecksum(tcp []byte) uint16 {
	return checksum.Checksum(tcp, pseudoSum(s.v6, s.src[:], s.dst[:], len(tcp)))
}

// pseudoSum is the checksum of a TCP pseudo-header.
func pseudoSum(v6 bool, src, dst []byte, length int) uint16 {
	return pseudoSumOf(header.TCPProtocolNumber, v6, src, dst, length)
}

// pseudoSumOf is the checksum of the pseudo-header of protocol p.
func pseudoSumOf(p tcpip.TransportProtocolNumber, v6 bool, src, dst []byte, length int) uint16 {
	if v6 {
		return header.PseudoHeaderChecksum(p, tcpipAddr(src[:16]), tcpipAddr(dst[:16]), uint16(length))
	}
	return header.PseudoHeaderChecksum(p, tcpipAddr(src[:4]), tcpipAddr(dst[:4]), uint16(length))
}

// tcpOut is what the flow engine puts in the headers of a segment it
// sends to the namespace.
type tcpOut struct {
	seq, ack uint32
	flags    header.TCPFlags
	wnd      uint16
	mss      uint16 // SYN: the MSS option (0: none)
	wscale   int8   // SYN: the window scale option (-1: none)
	sackOK   bool   // SYN: the SACK-permitted option
	// sack are SACK blocks (of the namespace's sequence numbers) for a
	// segment without payload: what the engine holds beyond a hole.
	sack [][2]uint32
}

// buildHeaders writes the Ethernet, IP and TCP headers of a segment from
// the flow's far end to the namespace into b (at least maxHdrLen bytes)
// and returns them. payload is checksummed, not copied.
func (f *tcpFlow) buildHeaders(b []byte, ourMAC [6]byte, o tcpOut, payload []byte) []byte {
	optLen := 0
	if o.flags&header.TCPFlagSyn != 0 {
		optLen = 4
		if o.wscale >= 0 {
			optLen = synOptsLen
		}
		if o.sackOK {
			optLen += 4 // NOP, NOP, SACK permitted
		}
	} else if len(o.sack) > 0 {
		optLen = 4 + 8*len(o.sack)
	}
	tcpLen := tcpHdrLen + optLen
	ipLen := ip4HdrLen
	if f.v6 {
		ipLen = ip6HdrLen
	}
	n := ethHdrLen + ipLen + tcpLen
	b = b[:n]
	copy(b[0:6], f.nsMAC[:])
	copy(b[6:12], ourMAC[:])
	ip := b[ethHdrLen:]
	if f.v6 {
		binary.BigEndian.PutUint16(b[12:], uint16(header.IPv6ProtocolNumber))
		header.IPv6(ip).Encode(&header.IPv6Fields{
			PayloadLength:     uint16(tcpLen + len(payload)),
			TransportProtocol: header.TCPProtocolNumber,
			HopLimit:          64,
			SrcAddr:           tcpipAddr(f.dst[:]),
			DstAddr:           tcpipAddr(f.src[:]),
		})
	} else {
		binary.BigEndian.PutUint16(b[12:], uint16(header.IPv4ProtocolNumber))
		h := header.IPv4(ip)
		h.Encode(&header.IPv4Fields{
			TotalLength: uint16(ip4HdrLen + tcpLen + len(payload)),
			Flags:       header.IPv4FlagDontFragment,
			TTL:         64,
			Protocol:    uint8(header.TCPProtocolNumber),
			SrcAddr:     tcpipAddr(f.dst[:4]),
			DstAddr:     tcpipAddr(f.src[:4]),
		})
		h.SetChecksum(^h.CalculateChecksum())
	}
	tcp := header.TCP(ip[ipLen:])
	tcp.Encode(&header.TCPFields{
		SrcPort:    f.dport,
		DstPort:    f.sport,
		SeqNum:     o.seq,
		AckNum:     o.ack,
		DataOffset: uint8(tcpLen),
		Flags:      o.flags,
		WindowSize: o.wnd,
	})
	if optLen > 0 {
		opts := tcp[tcpHdrLen:tcpLen]
		if o.flags&header.TCPFlagSyn != 0 {
			n := 4
			header.EncodeMSSOption(uint32(o.mss), opts)
			if o.wscale >= 0 {
				opts[4] = header.TCPOptionNOP
				header.EncodeWSOption(int(o.wscale), opts[5:])
				n = synOptsLen
			}
			if o.sackOK {
				opts[n], opts[n+1] = header.TCPOptionNOP, header.TCPOptionNOP
				header.EncodeSACKPermittedOption(opts[n+2:])
			}
		} else {
			opts[0], opts[1] = header.TCPOptionNOP, header.TCPOptionNOP
			opts[2], opts[3] = header.TCPOptionSACK, byte(2+8*len(o.sack))
			for i, b := range o.sack {
				binary.BigEndian.PutUint32(opts[4+8*i:], b[0])
				binary.BigEndian.PutUint32(opts[8+8*i:], b[1])
			}
		}
	}
	var sum uint16
	if f.v6 {
		sum = pseudoSum(true, f.dst[:], f.src[:], tcpLen+len(payload))
	} else {
		sum = pseudoSum(false, f.dst[:], f.src[:], tcpLen+len(payload))
	}
	sum = checksum.Checksum(payload, sum)
	tcp.SetChecksum(^checksum.Checksum(tcp[:tcpLen], sum))
	return b
}

// tcpipAddr is b as gVisor's address type (4 or 16 bytes).
func tcpipAddr(b []byte) tcpip.Address { return tcpip.AddrFromSlice(b) }
