package relay

// UDP on the flow engine. Each flow of the namespace (its four-tuple)
// gets a connected, non-blocking host socket in the engine's epoll set.
// A datagram from the namespace is sent on it as it came; what the host
// socket receives goes to the namespace in frames built here (IP
// fragments where a datagram is larger than the link's MTU). Errors the
// host's kernel reports for the flow (IP_RECVERR: port, host or network
// unreachable) reach the namespace as the ICMP errors Linux would send,
// as in the stack's relay (udp.go). A flow ends once it has carried no
// datagram either way for Config.UDPIdleTimeout.
//
// The stack keeps what is its own: datagrams to its addresses (DNS, the
// echo service, DHCP), to a port one of its sockets holds (a forward's
// reply, a socket of a program on the stack), and to anything but a
// unicast address. A datagram the namespace sent in IP fragments goes to
// the stack, which reassembles it, and comes back to the engine from the
// stack's relay (reassembled), so that a flow has one host socket
// whatever the size of its datagrams.

import (
	"encoding/binary"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// maxDatagramsPerEvent bounds what one readiness of a host socket sends
// the namespace before the loop serves the others; the set (level-
// triggered for UDP) reports the rest at the next wake-up.
const maxDatagramsPerEvent = 256

// openUDP starts a flow for a datagram of a new four-tuple, or leaves it
// to the stack (false).
func (e *engine) openUDP(s *segment, key flowKey) bool {
	g := e.g
	dst := addrOf(s.v6, s.dst)
	if !dst.IsGlobalUnicast() || g.st.IsLocal(dst) || e.stackHolds(s) || g.draining.Load() {
		return false
	}
	v := g.decide(netip.AddrPortFrom(dst, s.dport), g.st.IsLocal)
	if !v.ok {
		return false // the stack's relay refuses it as it always has
	}
	if !tryAcquire(g.flows) {
		g.stats.busy.Add(1)
		g.limitLog("flows", "%d relayed flows: dropping new UDP flows (--max-flows)", g.cfg.MaxFlows)
		return true // dropped
	}
	fd, err := e.dialUDP(v.dial)
	if err != nil {
		release(g.flows)
		g.stats.dialFail.Add(1)
		if why, ok := unreachFor(err); ok {
			e.unreachable(s, why)
		}
		return true
	}
	idx := e.alloc()
	f := &e.flows[idx]
	now := e.tick()
	*f = tcpFlow{
		src: s.src, dst: s.dst, sport: s.sport, dport: s.dport, v6: s.v6,
		state: stUDP, nsMAC: s.srcMAC, fd: int32(fd), gen: f.gen + 1, idx: idx,
		start: time.Now().UnixNano(), lastAt: now,
	}
	e.index[key] = idx
	e.born()
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(idx), Pad: int32(f.gen)} // level-triggered (udpEvent)
	if err := unix.EpollCtl(e.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		e.release(f, idx)
		return true
	}
	g.stats.udp.Add(1)
	g.stats.active.Add(1)
	if e.logging {
		g.logFlow("flow start", e.logRecord(f))
	}
	e.arm(f, idx, &f.rtoAt, now+e.udpIdle())
	e.udpInput(f, idx, s)
	return true
}

// reassembled takes a datagram the stack's relay was handed rather than
// the engine (one the stack reassembled from fragments, mostly): it goes
// to the engine's flow, or opens one as a datagram off the link would.
// False leaves it to the stack's relay.
func (e *engine) reassembled(r *udpRequest) bool {
	pkt := r.pkt
	if pkt == nil {
		return false
	}
	lh := pkt.LinkHeader().Slice()
	uh := header.UDP(pkt.TransportHeader().Slice())
	if len(lh) < ethHdrLen || len(uh) < udpHdrLen || int(uh.Length()) != len(uh)+pkt.Data().Size() {
		return false
	}
	payload := pkt.Data().AsRange().ToSlice()
	local, remote := r.ID.Dst.Addr(), r.ID.Src.Addr()
	v6 := pkt.NetworkProtocolNumber == header.IPv6ProtocolNumber
	s := segment{udp: true, v6: v6, sport: r.ID.Src.Port(), dport: r.ID.Dst.Port(), payload: payload}
	if v6 {
		s.src, s.dst = remote.As16(), local.As16()
	} else {
		s.src, s.dst = [16]byte{}, [16]byte{}
		a, b := remote.Unmap().As4(), local.Unmap().As4()
		copy(s.src[:4], a[:])
		copy(s.dst[:4], b[:])
	}
	if sum := uh.Checksum(); sum != 0 || v6 {
		if checksum.Checksum(payload, checksum.Checksum(uh, pseudoSumOf(header.UDPProtocolNumber, v6, s.src[:], s.dst[:], len(uh)+len(payload)))) != 0xffff {
			return false
		}
	}
	copy(s.srcMAC[:], header.Ethernet(lh).SourceAddress())
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	key := flowKey{src: s.src, dst: s.dst, sport: s.sport, dport: s.dport, udp: true}
	if idx, ok := e.lookup(&key); ok {
		e.udpInput(&e.flows[idx], idx, &s)
		return true
	}
	return e.openUDP(&s, key)
}

// udpIdle is Config.UDPIdleTimeout in wheel ticks.
func (e *engine) udpIdle() int64 { return max(1, int64(e.g.cfg.UDPIdleTimeout)/wheelTick) }

// stackHolds says whether one of the stack's sockets would take the
// datagram s: a port forward's, or a program's on the stack.
func (e *engine) stackHolds(s *segment) bool {
	netProto, n := header.IPv4ProtocolNumber, 4
	if s.v6 {
		netProto, n = header.IPv6ProtocolNumber, 16
	}
	id := gvstack.TransportEndpointID{
		LocalPort: s.dport, LocalAddress: tcpip.AddrFromSlice(s.dst[:n]),
		RemotePort: s.sport, RemoteAddress: tcpip.AddrFromSlice(s.src[:n]),
	}
	return e.g.st.GV().FindTransportEndpoint(netProto, header.UDPProtocolNumber, id, e.nic) != nil
}

// dialUDP opens a connected, non-blocking host UDP socket to dst that
// reports the ICMP errors it gets (IP_RECVERR).
func (e *engine) dialUDP(dst netip.AddrPort) (int, error) {
	family, level, opt := unix.AF_INET, unix.IPPROTO_IP, unix.IP_RECVERR
	if dst.Addr().Is6() {
		family, level, opt = unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_RECVERR
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	_ = unix.SetsockoptInt(fd, level, opt, 1)
	if src, ok := e.g.outboundFor(dst.Addr()); ok {
		if err := unix.Bind(fd, e.sockaddr(netip.AddrPortFrom(src, 0))); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if err := unix.Connect(fd, e.sockaddr(dst)); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// udpInput sends a datagram of the namespace's to the host.
func (e *engine) udpInput(f *tcpFlow, idx uint32, s *segment) {
	f.lastAt = e.tick()
	if e.batchUDP(f, idx, s.payload) {
		return
	}
	n, err := sendUDP(int(f.fd), s.payload)
	switch {
	case err == nil:
		f.up += uint64(n)
		e.g.bytes.up.Add(uint64(n))
	case err == unix.EAGAIN || err == unix.ENOBUFS:
		// The host socket's buffer is full: dropped, as a full
		// queue drops.
	default:
		e.udpError(f, idx, err)
	}
}

// udpEvent reads what f's host socket received and sends it to the
// namespace.
func (e *engine) udpEvent(f *tcpFlow, idx uint32, events uint32) {
	if events&unix.EPOLLERR != 0 {
		if soerr, err := unix.GetsockoptInt(int(f.fd), unix.SOL_SOCKET, unix.SO_ERROR); err == nil && soerr != 0 {
			e.udpError(f, idx, unix.Errno(soerr))
		} else {
			// The set reports EPOLLERR while the error queue holds
			// anything (level-triggered): empty it.
			drainErrors(int(f.fd))
		}
	}
	// The set reports the socket while datagrams wait (level-triggered):
	// one read per wake-up, as an answer is, so that it costs no read
	// that finds nothing; a socket readable at two wake-ups in a row is
	// drained, up to maxDatagramsPerEvent.
	limit := 1
	if f.retries == uint8(e.wakeups-1) {
		limit = maxDatagramsPerEvent
	}
	f.retries = uint8(e.wakeups)
	for i := 0; i < limit; i++ {
		n, err := recvNonblock(int(f.fd), e.buf)
		if err == unix.EAGAIN {
			return
		}
		if err != nil {
			e.udpError(f, idx, err)
			continue
		}
		f.lastAt = e.tick()
		f.down += uint64(n)
		e.g.bytes.down.Add(uint64(n))
		e.datagramOut(f, e.buf[:n])
	}
}

// udpError passes an error of f's host socket to the namespace as the
// ICMP error Linux would send, and empties the socket's error queue.
func (e *engine) udpError(f *tcpFlow, _ uint32, err error) {
	drainErrors(int(f.fd))
	why, ok := unreachFor(err)
	if !ok {
		return
	}
	e.g.stats.udpErrors.Add(1)
	s := segment{udp: true, v6: f.v6, src: f.src, dst: f.dst, sport: f.sport, dport: f.dport, srcMAC: f.nsMAC}
	e.unreachable(&s, why)
}

// drainErrors empties a socket's error queue (IP_RECVERR fills it with
// one entry per error; left there, they would eat its receive buffer).
func drainErrors(fd int) {
	var buf, oob [512]byte
	for i := 0; i < 64; i++ {
		if _, _, _, _, err := unix.Recvmsg(fd, buf[:], oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT); err != nil {
			return
		}
	}
}

// udpTimer ends f if it has been idle for UDPIdleTimeout, or files its
// timer again for when it would be.
func (e *engine) udpTimer(f *tcpFlow, idx uint32, tick int64) {
	end := f.lastAt + e.udpIdle()
	if end <= tick {
		e.release(f, idx)
		return
	}
	f.rtoAt = end
	e.retime(f, idx)
}

// datagramOut sends payload to the namespace as one UDP datagram of f's
// far end: one frame, or IP fragments of at most the link's MTU.
func (e *engine) datagramOut(f *tcpFlow, payload []byte) {
	ipLen := ip4HdrLen
	if f.v6 {
		ipLen = ip6HdrLen
	}
	udp := e.udpHdr[:]
	binary.BigEndian.PutUint16(udp[0:], f.dport)
	binary.BigEndian.PutUint16(udp[2:], f.sport)
	binary.BigEndian.PutUint16(udp[4:], uint16(udpHdrLen+len(payload)))
	binary.BigEndian.PutUint16(udp[6:], 0)
	sum := pseudoSumOf(header.UDPProtocolNumber, f.v6, f.dst[:], f.src[:], udpHdrLen+len(payload))
	sum = checksum.Checksum(payload, sum)
	sum = ^checksum.Checksum(udp, sum)
	if sum == 0 {
		sum = 0xffff // 0 would say there is none (RFC 768)
	}
	binary.BigEndian.PutUint16(udp[6:], sum)
	total := udpHdrLen + len(payload)
	if ipLen+total <= e.mtu {
		hdr := e.ipHeader(f, 0, total, 0, false, false)
		e.writeParts(f, hdr, udp, payload)
		return
	}
	// Fragments: each carries a multiple of 8 bytes of the datagram
	// (the UDP header and the payload), the last what is left.
	per := (e.mtu - ipLen) &^ 7
	if f.v6 {
		per = (e.mtu - ipLen - fragHdrLen) &^ 7
	}
	e.ipID++
	for off := 0; off < total; off += per {
		n := min(per, total-off)
		more := off+n < total
		hdr := e.ipHeader(f, e.ipID, n, off, more, true)
		var a, b []byte
		if off < udpHdrLen {
			a, b = udp[off:], payload[:n-(udpHdrLen-off)]
		} else {
			b = payload[off-udpHdrLen : off-udpHdrLen+n]
		}
		e.writeParts(f, hdr, a, b)
	}
}

// ipHeader writes the Ethernet and IP headers of a UDP datagram (or of
// one of its fragments: n bytes of it at offset off) from f's far end to
// the namespace into e.hdr and returns them.
func (e *engine) ipHeader(f *tcpFlow, id uint32, n, off int, more, frag bool) []byte {
	b := e.hdr[:]
	copy(b[0:6], f.nsMAC[:])
	copy(b[6:12], e.mac[:])
	ip := b[ethHdrLen:]
	if f.v6 {
		binary.BigEndian.PutUint16(b[12:], uint16(header.IPv6ProtocolNumber))
		plen, next := n, header.UDPProtocolNumber
		if frag {
			plen, next = n+fragHdrLen, header.IPv6FragmentHeader
		}
		header.IPv6(ip).Encode(&header.IPv6Fields{
			PayloadLength: uint16(plen), TransportProtocol: next, HopLimit: 64,
			SrcAddr: tcpipAddr(f.dst[:]), DstAddr: tcpipAddr(f.src[:]),
		})
		if !frag {
			return b[:ethHdrLen+ip6HdrLen]
		}
		fh := ip[ip6HdrLen : ip6HdrLen+fragHdrLen]
		fh[0], fh[1] = uint8(header.UDPProtocolNumber), 0
		word := uint16(off)
		if more {
			word |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], word)
		binary.BigEndian.PutUint32(fh[4:], id)
		return b[:ethHdrLen+ip6HdrLen+fragHdrLen]
	}
	binary.BigEndian.PutUint16(b[12:], uint16(header.IPv4ProtocolNumber))
	h := header.IPv4(ip)
	fields := header.IPv4Fields{
		TotalLength: uint16(ip4HdrLen + n), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpipAddr(f.dst[:4]), DstAddr: tcpipAddr(f.src[:4]),
	}
	if frag {
		fields.ID, fields.FragmentOffset = uint16(id), uint16(off)
		if more {
			fields.Flags = header.IPv4FlagMoreFragments
		}
	}
	h.Encode(&fields)
	h.SetChecksum(^h.CalculateChecksum())
	return b[:ethHdrLen+ip4HdrLen]
}

// writeParts writes one frame made of hdr, a and b.
func (e *engine) writeParts(f *tcpFlow, hdr, a, b []byte) {
	bufs := e.iov[:1]
	e.iov[0] = hdr
	for _, p := range [2][]byte{a, b} {
		if len(p) > 0 {
			e.iov[len(bufs)] = p
			bufs = e.iov[:len(bufs)+1]
		}
	}
	_ = e.wire.WriteFrame(uint32(f.sport), bufs)
	clear(e.iov[:])
}

// sendUDP sends b on a connected datagram socket without waiting (an
// empty datagram too).
func sendUDP(fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(p), uintptr(len(b)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// recvNonblock reads one datagram (or stream bytes) without waiting.
func recvNonblock(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
