package relay

import (
	"bytes"
	"encoding/binary"
	"net"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// udpFrame builds a UDP datagram of the namespace peer to the far end.
func udpFrame(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, ethHdrLen+ip4HdrLen+udpHdrLen+len(payload))
	copy(b[0:6], engMAC[:])
	copy(b[6:12], peerMAC[:])
	binary.BigEndian.PutUint16(b[12:], uint16(header.IPv4ProtocolNumber))
	ip := header.IPv4(b[ethHdrLen:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b) - ethHdrLen), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpipAddr(peerIP[:]), DstAddr: tcpipAddr(farIP[:])})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(ip[ip4HdrLen:])
	u.Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(udpHdrLen + len(payload))})
	copy(u[udpHdrLen:], payload)
	sum := pseudoSumOf(header.UDPProtocolNumber, false, peerIP[:], farIP[:], len(u))
	u.SetChecksum(^checksum.Checksum(u, sum))
	return b
}

// udpEcho serves UDP echo on the host's loopback until the test ends.
func udpEcho(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, a, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			c.WriteToUDP(buf[:n], a)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// nextIPv4 waits for the engine's next IPv4 frame and returns its IP
// packet, checked.
func nextIPv4(t *testing.T, w *chanWire) header.IPv4 {
	t.Helper()
	select {
	case f := <-w.frames:
		b := append([]byte(nil), f.b[:f.n]...)
		if binary.BigEndian.Uint16(b[12:]) != uint16(header.IPv4ProtocolNumber) || !bytes.Equal(b[0:6], peerMAC[:]) {
			t.Fatalf("not an IPv4 frame to the peer: % x", b[:min(len(b), 40)])
		}
		ip := header.IPv4(b[ethHdrLen:])
		if !ip.IsValid(len(ip)) || checksum.Checksum(ip[:ip.HeaderLength()], 0) != 0xffff {
			t.Fatalf("an invalid IPv4 header: % x", b[:min(len(b), 40)])
		}
		return ip
	case <-time.After(5 * time.Second):
		t.Fatal("no frame from the engine within 5 s")
	}
	return nil
}

// recvDatagram reassembles the engine's next datagram to the peer and
// checks its ports and checksum.
func recvDatagram(t *testing.T, w *chanWire, sport, dport uint16) (payload []byte, frames int) {
	t.Helper()
	var whole []byte
	for {
		ip := nextIPv4(t, w)
		frames++
		if ip.Protocol() != uint8(header.UDPProtocolNumber) {
			t.Fatalf("protocol %d, want UDP", ip.Protocol())
		}
		off := int(ip.FragmentOffset())
		if off != len(whole) {
			t.Fatalf("fragment at %d, want %d", off, len(whole))
		}
		whole = append(whole, ip.Payload()...)
		if ip.Flags()&header.IPv4FlagMoreFragments == 0 {
			break
		}
		if len(ip) > 1500 {
			t.Fatalf("a fragment of %d bytes on a link of MTU 1500", len(ip))
		}
	}
	u := header.UDP(whole)
	if int(u.Length()) != len(whole) || u.SourcePort() != dport || u.DestinationPort() != sport {
		t.Fatalf("datagram of %d bytes (header says %d) from %d to %d; want from %d to %d", len(whole), u.Length(), u.SourcePort(), u.DestinationPort(), dport, sport)
	}
	sum := pseudoSumOf(header.UDPProtocolNumber, false, farIP[:], peerIP[:], len(whole))
	if checksum.Checksum(whole, sum) != 0xffff {
		t.Fatal("the datagram's checksum is wrong")
	}
	return whole[udpHdrLen:], frames
}

// TestFlowEngineRelaysUDP: datagrams of every size the namespace may
// send (empty, small, larger than the link's MTU) reach a host echo
// and come back whole, the large ones in IP fragments of at most the
// MTU; the flow is listed, counted, and ends once idle.
func TestFlowEngineRelaysUDP(t *testing.T) {
	divert, w, g := engineRigWith(t, func(c *Config) { c.UDPIdleTimeout = 300 * time.Millisecond })
	port := udpEcho(t)
	for _, size := range []int{0, 1, 1472, 1473, 4000, 65507 - 20} {
		msg := bytes.Repeat([]byte{byte(size)}, size)
		for i := range msg {
			msg[i] = byte(i * 7)
		}
		if !divert(udpFrame(41000, port, msg)) {
			t.Fatal("the engine left a relayed datagram to the stack")
		}
		got, frames := recvDatagram(t, w, 41000, port)
		if !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes sent, %d came back, or not the same", size, len(got))
		}
		if want := 1 + (udpHdrLen+size-1)/(1480); size > 1472 && frames != want {
			t.Fatalf("%d bytes came in %d fragments, want %d", size, frames, want)
		}
	}
	if fl := g.FlowList(); len(fl) != 1 || fl[0].Proto != "udp" {
		t.Fatalf("flows %+v, want one UDP flow", fl)
	}
	if st := g.Stats(); st.UDPRelayed != 1 {
		t.Fatalf("UDP flows relayed %d, want 1", st.UDPRelayed)
	}
	for deadline := time.Now().Add(5 * time.Second); g.FlowCount() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the UDP flow did not end once idle")
		}
	}
	// A datagram with a wrong checksum is not the engine's.
	bad := udpFrame(41001, port, []byte("bad"))
	bad[len(bad)-1] ^= 0xff
	if divert(bad) {
		t.Fatal("the engine took a datagram with a wrong checksum")
	}
}

// TestFlowEngineUDPPortUnreachable: a datagram to a host port nobody
// holds is answered with ICMP port unreachable, quoting the ports, as
// the host's kernel answered it.
func TestFlowEngineUDPPortUnreachable(t *testing.T) {
	divert, w, g := engineRig(t)
	c, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	c.Close()
	divert(udpFrame(41002, port, []byte("anyone?")))
	ip := nextIPv4(t, w)
	ic := header.ICMPv4(ip.Payload())
	if ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) || ic.Type() != header.ICMPv4DstUnreachable || ic.Code() != header.ICMPv4PortUnreachable {
		t.Fatalf("got protocol %d, ICMP %d/%d; want ICMP port unreachable", ip.Protocol(), ic.Type(), ic.Code())
	}
	quote := header.IPv4(ic[header.ICMPv4MinimumSize:])
	u := header.UDP(quote[ip4HdrLen:])
	if quote.Protocol() != uint8(header.UDPProtocolNumber) || u.SourcePort() != 41002 || u.DestinationPort() != port {
		t.Fatalf("the error quotes protocol %d, ports %d → %d; want UDP 41002 → %d", quote.Protocol(), u.SourcePort(), u.DestinationPort(), port)
	}
	if st := g.Stats(); st.UDPErrors != 1 {
		t.Fatalf("UDP errors %d, want 1", st.UDPErrors)
	}
}

// BenchmarkFlowEngineUDPExchange: one datagram of 1 byte from the
// namespace peer through the engine to a host echo and back, per
// operation (the frames are built once; what it reports is the
// engine's and the echo's).
func BenchmarkFlowEngineUDPExchange(b *testing.B) {
	divert, w, _ := engineRig(b)
	port := udpEchoRaw(b)
	frame := udpFrame(41100, port, []byte("x"))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		divert(frame)
		<-w.frames
	}
}

// TestFlowEngineUDPAllocatesNothing: a UDP exchange through the engine
// allocates nothing, counted over every goroutine of the process.
func TestFlowEngineUDPAllocatesNothing(t *testing.T) {
	divert, w, _ := engineRig(t)
	port := udpEchoRaw(t)
	frame := udpFrame(41101, port, []byte("x"))
	divert(frame)
	<-w.frames
	if n := testing.AllocsPerRun(300, func() { divert(frame); <-w.frames }); n >= 1 {
		t.Errorf("%.2f allocations per UDP exchange, want 0", n)
	}
}

// udpEchoRaw serves UDP echo on the host's loopback with raw system
// calls (no allocation per datagram) until the test ends.
func udpEchoRaw(t testing.TB) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.File() // a blocking duplicate for the raw loop
	port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	done := make(chan struct{})
	go func() {
		defer close(done)
		var (
			buf [2048]byte
			sa  syscall.RawSockaddrInet4
		)
		for {
			salen := uint32(unsafe.Sizeof(sa))
			n, _, e := syscall.Syscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0,
				uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&salen)))
			if e != 0 || salen == 0 {
				return
			}
			syscall.Syscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), n, 0,
				uintptr(unsafe.Pointer(&sa)), uintptr(salen))
		}
	}()
	t.Cleanup(func() {
		syscall.Shutdown(fd, syscall.SHUT_RDWR)
		<-done
		f.Close()
	})
	return port
}

// TestFlowEngineBatchesDatagramsInOrder: while the loop reads a batch of
// frames, the datagrams for a host socket wait and go out together when
// the batch ends: every one arrives, in order and whole, whether the
// batch fills, another flow's datagram comes between, or one is too big
// to wait; counted up as if each were sent at once.
func TestFlowEngineBatchesDatagramsInOrder(t *testing.T) {
	divert, _, g := engineRig(t)
	sinks := make([]*net.UDPConn, 2)
	for i := range sinks {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetReadBuffer(4 << 20); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		sinks[i] = c
	}
	port := func(i int) uint16 { return uint16(sinks[i].LocalAddr().(*net.UDPAddr).Port) }
	// Datagram k of sink s: its size and a pattern naming it.
	msg := func(s, k int) []byte {
		size := 1 + k*37%1400
		switch k {
		case 20:
			size = maxBatched + 1 // sent at once, after what waits
		case 21:
			size = 0
		}
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(s*101 + k*13 + i)
		}
		return b
	}
	const perSink = 40
	var want [2][][]byte
	var up uint64
	e := g.eng
	e.mu.Lock()
	e.batching = true
	e.mu.Unlock()
	for k := 0; k < perSink; k++ {
		for s := range sinks {
			// Sink 0 gets runs of three, sink 1 one at a time.
			if s == 1 && k%3 != 0 {
				continue
			}
			m := msg(s, k)
			want[s] = append(want[s], m)
			up += uint64(len(m))
			if !divert(udpFrame(41200+uint16(s), port(s), m)) {
				t.Fatal("the engine left a relayed datagram to the stack")
			}
		}
	}
	for k := perSink; k < perSink+2*linkBatch; k++ { // fills the batch twice over
		m := msg(0, k)
		want[0] = append(want[0], m)
		up += uint64(len(m))
		divert(udpFrame(41200, port(0), m))
	}
	e.endBatch()
	if e.ub.n != 0 {
		t.Fatalf("%d datagrams still wait after the batch", e.ub.n)
	}
	buf := make([]byte, 65536)
	for s, c := range sinks {
		for k, w := range want[s] {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("sink %d, datagram %d of %d: %v", s, k, len(want[s]), err)
			}
			if !bytes.Equal(buf[:n], w) {
				t.Fatalf("sink %d, datagram %d: %d bytes, want %d (or not the same)", s, k, n, len(w))
			}
		}
	}
	var counted uint64
	for _, f := range g.FlowList() {
		counted += f.Up
	}
	if counted != up {
		t.Fatalf("flows counted %d bytes up, want %d", counted, up)
	}
}

// TestFlowEngineTakesBurstsFromTheHost: datagrams the host sends in
// bursts, several to each readiness of its socket, all reach the
// namespace in order and whole (empty ones and ones larger than the
// link's MTU too), and are counted.
func TestFlowEngineTakesBurstsFromTheHost(t *testing.T) {
	divert, w, g := engineRig(t)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	if !divert(udpFrame(41300, port, []byte("hello"))) {
		t.Fatal("the engine left a relayed datagram to the stack")
	}
	buf := make([]byte, 64)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, from, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg := func(k int) []byte {
		size := k * 53 % 1200
		if k%17 == 5 {
			size = 3000 + k // fragments on the link
		}
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(k*31 + i)
		}
		return b
	}
	const bursts, per = 8, 13
	var down uint64
	for b := 0; b < bursts; b++ {
		for k := b * per; k < (b+1)*per; k++ {
			m := msg(k)
			down += uint64(len(m))
			if _, err := c.WriteToUDP(m, from); err != nil {
				t.Fatal(err)
			}
		}
		for k := b * per; k < (b+1)*per; k++ {
			got, _ := recvDatagram(t, w, 41300, port)
			if want := msg(k); !bytes.Equal(got, want) {
				t.Fatalf("datagram %d: %d bytes, want %d (or not the same)", k, len(got), len(want))
			}
		}
	}
	if fl := g.FlowList(); len(fl) != 1 || fl[0].Down != down {
		t.Fatalf("flows %+v, want one with %d bytes down", fl, down)
	}
}

// TestFlowEngineRestsAfterManyPortErrors: many datagrams to a closed
// host port fill the host socket's error queue; the engine empties it,
// so that its level-triggered set does not report the socket again and
// again: once the errors are answered, the loop sleeps.
func TestFlowEngineRestsAfterManyPortErrors(t *testing.T) {
	divert, w, g := engineRig(t)
	c, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	c.Close()
	done := make(chan struct{})
	go func() { // the engine's ICMP errors: taken, not counted
		for {
			select {
			case <-w.frames:
			case <-done:
				return
			}
		}
	}()
	defer close(done)
	frame := udpFrame(41400, port, []byte("anyone?"))
	for i := 0; i < 500; i++ {
		divert(frame)
	}
	e := g.eng
	wakeups := func() uint64 {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.wakeups
	}
	time.Sleep(300 * time.Millisecond) // the last errors arrive and are handled
	before := wakeups()
	time.Sleep(300 * time.Millisecond)
	// The wheel's tick wakes an engine with flows now and then; a set
	// that reports a socket over and over wakes it thousands of times.
	if n := wakeups() - before; n > 100 {
		t.Fatalf("the engine woke %d times in 300 ms with nothing to do", n)
	}
	if g.Stats().UDPErrors == 0 {
		t.Fatal("no ICMP error came back")
	}
}
