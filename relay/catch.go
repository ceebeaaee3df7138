package relay

// This file catches what the relay relays: the flows and pings from the
// namespace to addresses that no socket of the stack serves, handed over
// by gVisor's transport forwarders before the stack would answer them.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack"
)

// flowID names a flow that reached a gateway stack: Src is the peer that
// sent it, Dst the address it was sent to.
type flowID struct {
	Src, Dst netip.AddrPort
}

func flowIDOf(id gvstack.TransportEndpointID) flowID {
	return flowID{
		Src: netip.AddrPortFrom(addrFromTCPIP(id.RemoteAddress), id.RemotePort),
		Dst: netip.AddrPortFrom(addrFromTCPIP(id.LocalAddress), id.LocalPort),
	}
}

func addrFromTCPIP(a tcpip.Address) netip.Addr {
	if a.Len() == 4 {
		return netip.AddrFrom4(a.As4())
	}
	return netip.AddrFrom16(a.As16())
}

// tcpRequest is a connection attempt (a SYN) to an address that no socket
// of the stack listens on. The handler must end it with exactly one of
// Accept, Refuse, Ignore or Unreachable; the first call ends it, later
// calls do nothing (Accept then fails with EINVAL).
type tcpRequest struct {
	ID flowID

	st   *stack.Stack
	r    *tcp.ForwarderRequest
	gid  gvstack.TransportEndpointID
	syn  *synCopy
	f    *tcpForwarder
	once sync.Once
}

// synCopy keeps what an ICMP error about a packet (a SYN, a flow's first
// datagram) must quote, and where to send it.
type synCopy struct {
	nic     tcpip.NICID
	srcMAC  tcpip.LinkAddress
	headers []byte // IP header and the first 8 bytes of TCP
	v6      bool
}

// end runs f, which must complete the gVisor request exactly once, if the
// request has not ended yet, then forgets the SYN. It reports whether f
// ran.
func (r *tcpRequest) end(f func()) bool {
	done := false
	r.once.Do(func() {
		f()
		done = true
		// After Complete: a SYN of the same flow that comes now is
		// dropped (the peer retries) instead of reaching the forwarder
		// while it still counts the old request.
		r.f.forget(r.gid)
	})
	return done
}

// Accept completes the handshake and returns the stack's side of the
// connection as a socket (one slot of the socket table; EMFILE when full,
// and then the peer gets a RST).
func (r *tcpRequest) Accept() (*sockets.Socket, error) {
	var s *sockets.Socket
	var err error
	if !r.end(func() {
		completed := false
		s, err = sockets.Adopt(r.st, familyOf(r.ID.Dst.Addr()), sockets.SOCK_STREAM, func(wq *waiter.Queue) (tcpip.Endpoint, tcpip.Error) {
			ep, terr := r.r.CreateEndpoint(wq)
			r.r.Complete(false)
			completed = true
			return ep, terr
		})
		if !completed {
			r.r.Complete(true) // the table is full: a RST
		}
	}) {
		return nil, errRequestEnded
	}
	return s, err
}

// errRequestEnded is Accept's error for a request that already ended.
var errRequestEnded = &sockets.Error{Errno: syscall.EINVAL, Msg: "invalid argument: the request has already ended"}

// familyOf is the socket family of an address.
func familyOf(a netip.Addr) sockets.Family {
	if a.Is4() || a.Is4In6() {
		return sockets.AF_INET
	}
	return sockets.AF_INET6
}

// Refuse answers with a RST, as a host with nothing on that port does.
func (r *tcpRequest) Refuse() { r.end(func() { r.r.Complete(true) }) }

// Ignore drops the SYN; the peer's connect times out (or retries).
func (r *tcpRequest) Ignore() { r.end(func() { r.r.Complete(false) }) }

// Unreachable drops the SYN and sends the peer an ICMP destination
// unreachable (host unreachable, or network unreachable when net is true)
// from the destination's address, as a router would. If the ICMP error
// cannot be sent it answers with a RST instead.
func (r *tcpRequest) Unreachable(net bool) {
	r.end(func() {
		why := unreachHost
		if net {
			why = unreachNet
		}
		err := errNoCopy
		if r.syn != nil {
			err = sendUnreachable(r.st, r.ID, r.syn, why)
		}
		// Complete exactly once: a second Complete panics in gVisor.
		r.r.Complete(err != nil)
	})
}

var errNoCopy = errors.New("no copy of the packet to quote")

// unreach is the reason an ICMP destination unreachable gives.
type unreach int

const (
	// unreachHost is ICMP host unreachable (ICMPv6 address unreachable):
	// the peer sees EHOSTUNREACH.
	unreachHost unreach = iota
	// unreachNet is ICMP network unreachable (ICMPv6 no route): the
	// peer sees ENETUNREACH.
	unreachNet
	// unreachPort is ICMP port unreachable: the peer sees ECONNREFUSED.
	unreachPort
)

// ipv4Packet is an IPv4 packet from src to dst of protocol proto with
// room for n bytes of payload after its header (checksummed, TTL 64).
func ipv4Packet(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, n int) []byte {
	pkt := make([]byte, header.IPv4MinimumSize+n)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)), TTL: 64, Protocol: uint8(proto),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	return pkt
}

// unreachablePacket is the IP packet of an ICMP destination unreachable
// from src to dst quoting headers (the offending packet's IP header and
// first 8 transport bytes): host or network unreachable, or port
// unreachable (IPv4); address, no route or port unreachable (IPv6).
func unreachablePacket(src, dst netip.Addr, v6 bool, headers []byte, why unreach) []byte {
	if !v6 {
		pkt := ipv4Packet(src, dst, header.ICMPv4ProtocolNumber, header.ICMPv4MinimumSize+len(headers))
		ic := header.ICMPv4(pkt[header.IPv4MinimumSize:])
		ic.SetType(header.ICMPv4DstUnreachable)
		code := header.ICMPv4HostUnreachable
		switch why {
		case unreachNet:
			code = header.ICMPv4NetUnreachable
		case unreachPort:
			code = header.ICMPv4PortUnreachable
		}
		ic.SetCode(code)
		copy(ic[header.ICMPv4MinimumSize:], headers)
		ic.SetChecksum(0)
		ic.SetChecksum(^checksum.Checksum(ic, 0))
		return pkt
	}
	icmpLen := header.ICMPv6ErrorHeaderSize + len(headers)
	pkt := make([]byte, header.IPv6MinimumSize+icmpLen)
	ip := header.IPv6(pkt)
	ip.Encode(&header.IPv6Fields{
		PayloadLength: uint16(icmpLen), TransportProtocol: header.ICMPv6ProtocolNumber, HopLimit: 64,
		SrcAddr: tcpip.AddrFrom16(src.As16()), DstAddr: tcpip.AddrFrom16(dst.As16()),
	})
	ic := header.ICMPv6(pkt[header.IPv6MinimumSize:])
	ic.SetType(header.ICMPv6DstUnreachable)
	code := header.ICMPv6AddressUnreachable
	switch why {
	case unreachNet:
		code = header.ICMPv6NetworkUnreachable
	case unreachPort:
		code = header.ICMPv6PortUnreachable
	}
	ic.SetCode(code)
	copy(ic[header.ICMPv6ErrorHeaderSize:], headers)
	ic.SetChecksum(0)
	ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: ic, Src: tcpip.AddrFrom16(src.As16()), Dst: tcpip.AddrFrom16(dst.As16()),
	}))
	return pkt
}

// sendUnreachable writes an ICMP error quoting headers (the offending
// packet's IP header and first 8 transport bytes) back to its sender.
func sendUnreachable(st *stack.Stack, id flowID, syn *synCopy, why unreach) error {
	pkt := unreachablePacket(id.Dst.Addr(), id.Src.Addr(), syn.v6, syn.headers, why)
	proto := ipv4.ProtocolNumber
	if syn.v6 {
		proto = ipv6.ProtocolNumber
	}
	if terr := st.GV().WritePacketToRemote(syn.nic, syn.srcMAC, proto, buffer.MakeWithData(pkt)); terr != nil {
		return fmt.Errorf("send ICMP unreachable: %s", terr)
	}
	return nil
}

// tcpForwarder counts the connection attempts in flight itself, with the
// SYN each started from: gVisor's forwarder starts a request for a SYN
// only when none of the same flow is in flight and fewer than its limit
// are, and says neither. Keeping the set here, a superset of gVisor's
// (an entry is added before gVisor sees the SYN and removed after the
// request completed), gVisor never drops a SYN we counted, and a SYN
// copy lives exactly as long as its request.
type tcpForwarder struct {
	max int

	mu      sync.Mutex
	pending map[gvstack.TransportEndpointID]*synCopy // protected by mu
	dropped uint64                                   // SYNs dropped at max; protected by mu
}

// claim records a SYN of a new flow. It returns false (drop the SYN) if a
// request for the flow is in flight or max are.
func (f *tcpForwarder) claim(id gvstack.TransportEndpointID, sc *synCopy) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.pending[id]; ok {
		return false
	}
	if len(f.pending) >= f.max {
		f.dropped++
		return false
	}
	f.pending[id] = sc
	return true
}

func (f *tcpForwarder) synOf(id gvstack.TransportEndpointID) *synCopy {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pending[id]
}

func (f *tcpForwarder) forget(id gvstack.TransportEndpointID) {
	f.mu.Lock()
	delete(f.pending, id)
	f.mu.Unlock()
}

// catchStats counts a TCP forwarder's connection attempts.
type catchStats struct {
	InFlight int    // requests started and not yet ended
	Dropped  uint64 // SYNs dropped because MaxInFlight were in flight
}

// copySYN returns what an ICMP error about pkt must quote, or nil if pkt
// is not a SYN.
func copySYN(pkt *gvstack.PacketBuffer) (sc *synCopy, isSYN bool) {
	th := pkt.TransportHeader().Slice()
	if len(th) < header.TCPMinimumSize {
		return nil, false
	}
	flags := header.TCP(th).Flags()
	if !flags.Contains(header.TCPFlagSyn) || flags.Contains(header.TCPFlagAck) {
		return nil, false
	}
	return copyHeaders(pkt), true
}

// copyHeaders keeps what an ICMP error about pkt must quote (its IP header
// and first 8 transport bytes) and where to send it; nil if pkt is too
// short.
func copyHeaders(pkt *gvstack.PacketBuffer) *synCopy {
	th := pkt.TransportHeader().Slice()
	nh := pkt.NetworkHeader().Slice()
	lh := pkt.LinkHeader().Slice()
	if len(lh) < header.EthernetMinimumSize || len(th) < 8 || len(nh) == 0 {
		return nil
	}
	return &synCopy{
		nic:     pkt.NICID,
		srcMAC:  header.Ethernet(lh).SourceAddress(),
		headers: append(append([]byte{}, nh...), th[:8]...),
		v6:      pkt.NetworkProtocolNumber == ipv6.ProtocolNumber,
	}
}

// catchTCP makes st hand every connection attempt that no socket takes
// to h, on a goroutine of its own. At most maxInFlight attempts are open
// (not yet ended by the handler) at once; more SYNs are dropped, and the
// peers retry. Call it from stack.Config.Init, before traffic flows; the
// NIC must be a gateway (stack.LinkConfig.Gateway) to see other hosts'
// addresses. The returned function reports the forwarder's counters.
func catchTCP(st *stack.Stack, maxInFlight int, h func(*tcpRequest)) func() catchStats {
	tf := &tcpForwarder{max: maxInFlight, pending: make(map[gvstack.TransportEndpointID]*synCopy)}
	fwd := tcp.NewForwarder(st.GV(), 0, maxInFlight, func(r *tcp.ForwarderRequest) {
		id := r.ID()
		h(&tcpRequest{ID: flowIDOf(id), st: st, r: r, gid: id, syn: tf.synOf(id), f: tf})
	})
	st.GV().SetTransportProtocolHandler(tcp.ProtocolNumber, func(id gvstack.TransportEndpointID, pkt *gvstack.PacketBuffer) bool {
		sc, isSYN := copySYN(pkt)
		if !isSYN {
			return fwd.HandlePacket(id, pkt) // not for the forwarder: a RST
		}
		if !tf.claim(id, sc) {
			st.GV().Stats().TCP.ForwardMaxInFlightDrop.Increment()
			return true // dropped; the peer retransmits
		}
		if !fwd.HandlePacket(id, pkt) {
			tf.forget(id) // not a valid SYN (a bad checksum)
			return false
		}
		return true
	})
	return func() catchStats {
		tf.mu.Lock()
		defer tf.mu.Unlock()
		return catchStats{InFlight: len(tf.pending), Dropped: tf.dropped}
	}
}

// udpRequest is the first datagram of a flow to an address and port no
// socket of the stack has bound.
type udpRequest struct {
	ID flowID

	st    *stack.Stack
	r     *udp.ForwarderRequest
	first *synCopy // where the first datagram came from, and its headers
	// pkt is the datagram, during the handler's call only.
	pkt *gvstack.PacketBuffer
}

// Unreachable sends the flow's source the ICMP destination unreachable
// (port, host or network) that Linux sends for a datagram that cannot be
// delivered, quoting the flow's first datagram: the sender's connected
// socket then fails with ECONNREFUSED, EHOSTUNREACH or ENETUNREACH. The
// relay calls it when its host socket reports such an error. It may be
// called at any time while the flow lives.
func (r *udpRequest) Unreachable(why unreach) error {
	if r.first == nil {
		return errNoCopy
	}
	return sendUnreachable(r.st, r.ID, r.first, why)
}

// Accept returns a socket bound to the flow's destination and connected
// to its source; the first datagram is waiting in it.
func (r *udpRequest) Accept() (*sockets.Socket, error) {
	return sockets.Adopt(r.st, familyOf(r.ID.Dst.Addr()), sockets.SOCK_DGRAM, func(wq *waiter.Queue) (tcpip.Endpoint, tcpip.Error) {
		return r.r.CreateEndpoint(wq)
	})
}

// catchUDP makes st hand the first datagram of every flow no socket
// takes to h, synchronously: h must return quickly (Accept, then hand the
// socket to a goroutine). If h returns false the stack answers as for a
// closed port (ICMP port unreachable). Call it from stack.Config.Init.
func catchUDP(st *stack.Stack, h func(*udpRequest) bool) { catchUDPWith(st, h, nil) }

// catchUDPWith is catchUDP with dhcp, which sees first each IPv4
// datagram to port 67 (the DHCP server's: from 0.0.0.0 to
// 255.255.255.255, or to the server's address) and keeps those it
// serves (it returns true); the others go on to h. dhcp runs
// synchronously and must not block.
func catchUDPWith(st *stack.Stack, h func(*udpRequest) bool, dhcp func(*linkDatagram) bool) {
	st.GV().SetTransportProtocolHandler(udp.ProtocolNumber, func(id gvstack.TransportEndpointID, pkt *gvstack.PacketBuffer) bool {
		if dhcp != nil && id.LocalPort == dhcpServerPort && pkt.NetworkProtocolNumber == ipv4.ProtocolNumber {
			if d := datagramOf(st, id, pkt); d != nil && dhcp(d) {
				return true
			}
		}
		return h(&udpRequest{ID: flowIDOf(id), st: st, r: udp.NewForwarderRequest(st.GV(), id, pkt.Clone()), first: copyHeaders(pkt), pkt: pkt})
	})
}

// linkDatagram is an IPv4 UDP datagram as it came off the link, for a
// service of the stack that answers at the link layer, to a peer that
// may have no address yet (DHCP).
type linkDatagram struct {
	Src, Dst netip.AddrPort
	// SrcMAC is the Ethernet source of the frame.
	SrcMAC  tcpip.LinkAddress
	Payload []byte

	st  *stack.Stack
	nic tcpip.NICID
}

// datagramOf copies what a linkDatagram holds out of pkt; nil if pkt has
// no Ethernet header or a bad UDP checksum (the stack checks it only
// when a socket takes the datagram).
func datagramOf(st *stack.Stack, id gvstack.TransportEndpointID, pkt *gvstack.PacketBuffer) *linkDatagram {
	lh := pkt.LinkHeader().Slice()
	uh := header.UDP(pkt.TransportHeader().Slice())
	if len(lh) < header.EthernetMinimumSize || len(uh) < header.UDPMinimumSize || int(uh.Length()) != len(uh)+pkt.Data().Size() {
		return nil
	}
	payload := pkt.Data().AsRange().ToSlice()
	if uh.Checksum() != 0 && !uh.IsChecksumValid(id.RemoteAddress, id.LocalAddress, checksum.Checksum(payload, 0)) {
		return nil
	}
	return &linkDatagram{
		Src:    netip.AddrPortFrom(addrFromTCPIP(id.RemoteAddress), id.RemotePort),
		Dst:    netip.AddrPortFrom(addrFromTCPIP(id.LocalAddress), id.LocalPort),
		SrcMAC: header.Ethernet(lh).SourceAddress(), Payload: payload,
		st: st, nic: pkt.NICID,
	}
}

// Reply sends payload from src to dst in an IPv4 UDP datagram, in a
// frame to dstMAC on the link the datagram came from.
func (d *linkDatagram) Reply(src, dst netip.AddrPort, dstMAC tcpip.LinkAddress, payload []byte) error {
	pkt := ipv4Packet(src.Addr(), dst.Addr(), header.UDPProtocolNumber, header.UDPMinimumSize+len(payload))
	s, t := tcpip.AddrFrom4(src.Addr().As4()), tcpip.AddrFrom4(dst.Addr().As4())
	u := header.UDP(pkt[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(len(u))})
	copy(u.Payload(), payload)
	sum := ^u.CalculateChecksum(checksum.Checksum(payload, header.PseudoHeaderChecksum(header.UDPProtocolNumber, s, t, uint16(len(u)))))
	if sum == 0 {
		sum = 0xffff
	}
	u.SetChecksum(sum)
	if terr := d.st.GV().WritePacketToRemote(d.nic, dstMAC, ipv4.ProtocolNumber, buffer.MakeWithData(pkt)); terr != nil {
		return fmt.Errorf("send to %s: %s", dst, terr)
	}
	return nil
}

// ndpPacket is a router solicitation, or a neighbor solicitation from
// the unspecified address (duplicate address detection of Target), as
// it came off the link.
type ndpPacket struct {
	Type   header.ICMPv6Type
	Src    netip.Addr
	Target netip.Addr // of a neighbor solicitation
	SrcMAC tcpip.LinkAddress
	NIC    tcpip.NICID
}

// catchNDP hands h the router solicitations and the neighbor
// solicitations of duplicate address detection that reach st, with a
// hop limit of 255 (they come from the link), synchronously: h must not
// block. The stack goes on handling them as before: its NICs are not
// routers, so it ignores solicitations for routers, and it answers a
// neighbor solicitation only for a group it joined (its own addresses').
// Call it from stack.Config.Init.
func catchNDP(st *stack.Stack, h func(*ndpPacket)) error {
	if terr := st.GV().RegisterRawTransportEndpoint(ipv6.ProtocolNumber, header.ICMPv6ProtocolNumber, ndpTap(h)); terr != nil {
		return fmt.Errorf("catch NDP: %s", terr)
	}
	return nil
}

// ndpTap is a raw ICMPv6 endpoint of gVisor's, which sees a copy of
// every valid ICMPv6 packet before the stack handles it, whatever its
// destination.
type ndpTap func(*ndpPacket)

// HandlePacket implements gvstack.RawTransportEndpoint.
func (h ndpTap) HandlePacket(pkt *gvstack.PacketBuffer) {
	ip := header.IPv6(pkt.NetworkHeader().Slice())
	lh := pkt.LinkHeader().Slice()
	if len(ip) < header.IPv6MinimumSize || ip.HopLimit() != header.NDPHopLimit || len(lh) < header.EthernetMinimumSize {
		return
	}
	msg := append(append([]byte{}, pkt.TransportHeader().Slice()...), pkt.Data().AsRange().ToSlice()...)
	ic := header.ICMPv6(msg)
	if len(ic) < header.ICMPv6MinimumSize || ic.Code() != 0 {
		return
	}
	p := &ndpPacket{Type: ic.Type(), Src: addrFromTCPIP(ip.SourceAddress()), SrcMAC: header.Ethernet(lh).SourceAddress(), NIC: pkt.NICID}
	switch p.Type {
	case header.ICMPv6RouterSolicit:
		if len(ic) < header.ICMPv6HeaderSize+header.NDPRSMinimumSize {
			return
		}
	case header.ICMPv6NeighborSolicit:
		if len(ic) < header.ICMPv6NeighborSolicitMinimumSize || !p.Src.IsUnspecified() {
			return
		}
		p.Target = addrFromTCPIP(header.NDPNeighborSolicit(ic.MessageBody()).TargetAddress())
	default:
		return
	}
	if ic.Checksum() != header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}) {
		return
	}
	h(p)
}

// echoRequest is an ICMP echo request to an address that is not the
// stack's own.
type echoRequest struct {
	Src, Dst netip.Addr
	// ID, Seq and Data are the echo's identifier, sequence number and
	// payload.
	ID, Seq uint16
	Data    []byte

	st     *stack.Stack
	nic    tcpip.NICID
	srcMAC tcpip.LinkAddress
}

// Reply sends the echo reply a real Dst would have sent, with data as its
// payload.
func (e *echoRequest) Reply(data []byte) error {
	var pkt []byte
	var proto tcpip.NetworkProtocolNumber
	if e.Dst.Is4() {
		proto = ipv4.ProtocolNumber
		pkt = ipv4Packet(e.Dst, e.Src, header.ICMPv4ProtocolNumber, header.ICMPv4MinimumSize+len(data))
		ic := header.ICMPv4(pkt[header.IPv4MinimumSize:])
		ic.SetType(header.ICMPv4EchoReply)
		ic.SetIdent(e.ID)
		ic.SetSequence(e.Seq)
		copy(ic.Payload(), data)
		ic.SetChecksum(0)
		ic.SetChecksum(^checksum.Checksum(ic, 0))
	} else {
		proto = ipv6.ProtocolNumber
		icmpLen := header.ICMPv6EchoMinimumSize + len(data)
		pkt = make([]byte, header.IPv6MinimumSize+icmpLen)
		ip := header.IPv6(pkt)
		ip.Encode(&header.IPv6Fields{
			PayloadLength: uint16(icmpLen), TransportProtocol: header.ICMPv6ProtocolNumber, HopLimit: 64,
			SrcAddr: tcpip.AddrFrom16(e.Dst.As16()), DstAddr: tcpip.AddrFrom16(e.Src.As16()),
		})
		ic := header.ICMPv6(pkt[header.IPv6MinimumSize:])
		ic.SetType(header.ICMPv6EchoReply)
		ic.SetIdent(e.ID)
		ic.SetSequence(e.Seq)
		copy(ic.Payload(), data)
		ic.SetChecksum(0)
		ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
			Header: ic[:header.ICMPv6EchoMinimumSize], Src: tcpip.AddrFrom16(e.Dst.As16()), Dst: tcpip.AddrFrom16(e.Src.As16()),
			PayloadCsum: checksum.Checksum(data, 0), PayloadLen: len(data),
		}))
	}
	if terr := e.st.GV().WritePacketToRemote(e.nic, e.srcMAC, proto, buffer.MakeWithData(pkt)); terr != nil {
		return fmt.Errorf("send echo reply: %s", terr)
	}
	return nil
}

// catchEcho makes st hand ICMP echo requests to addresses that are not
// its own to h (on a goroutine of its own) instead of answering them: a
// gateway stack in promiscuous mode would otherwise answer for every
// address. Requests to the stack's own addresses are answered as usual.
// Call it from stack.Config.Init.
func catchEcho(st *stack.Stack, h func(*echoRequest)) {
	handle := func(v6 bool) func(gvstack.TransportEndpointID, *gvstack.PacketBuffer) bool {
		return func(id gvstack.TransportEndpointID, pkt *gvstack.PacketBuffer) bool {
			dst := addrFromTCPIP(id.LocalAddress)
			if st.IsLocal(dst) {
				return false
			}
			th := pkt.TransportHeader().Slice()
			if len(th) == 0 {
				// The ICMP header is still in the payload.
				th = pkt.Data().AsRange().ToSlice()
			} else {
				th = append(append([]byte{}, th...), pkt.Data().AsRange().ToSlice()...)
			}
			lh := pkt.LinkHeader().Slice()
			if len(th) < 8 || len(lh) < header.EthernetMinimumSize {
				return true // drop what cannot be relayed
			}
			isEcho := th[0] == byte(header.ICMPv4Echo)
			if v6 {
				isEcho = th[0] == byte(header.ICMPv6EchoRequest)
			}
			if !isEcho {
				return false
			}
			e := &echoRequest{
				Src: addrFromTCPIP(id.RemoteAddress), Dst: dst,
				ID: binary.BigEndian.Uint16(th[4:6]), Seq: binary.BigEndian.Uint16(th[6:8]),
				Data: append([]byte{}, th[8:]...),
				st:   st, nic: pkt.NICID, srcMAC: header.Ethernet(lh).SourceAddress(),
			}
			go h(e)
			return true
		}
	}
	st.GV().SetTransportProtocolHandler(header.ICMPv4ProtocolNumber, handle(false))
	st.GV().SetTransportProtocolHandler(header.ICMPv6ProtocolNumber, handle(true))
}
