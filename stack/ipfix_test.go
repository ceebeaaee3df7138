package stack_test

// A test of what this module's build changes in gVisor's IP layer
// (third_party/gvisor-patches/0007): parsing an inbound packet's IP
// header keeps a copy of the header, not a second reference to the
// packet's memory, so that the headers read after it do not copy the
// whole packet.

import (
	"net/netip"
	"runtime"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tapstack/tapstack/stack"
)

// TestInboundHeadersDoNotCopyThePacket delivers IPv4 packets of 65 535
// bytes (a TAP with offloads hands over frames this large) to a UDP
// endpoint and weighs what the stack allocates for each. Frames over 64 KiB live
// outside gVisor's buffer pools, so a copy of one shows in the heap (a
// copy of a smaller one costs the same time, from a pool): with gVisor's
// code as released, the IP layer's header view shared the frame's memory
// and the next header read copied all of it, and UDP read headers after
// it had cloned the packet for its receive queue: two copies per packet.
// (IPv6's walk over extension headers still shares the packet's memory
// and copies it; the patch leaves that alone.)
func TestInboundHeadersDoNotCopyThePacket(t *testing.T) {
	const mtu = 65520
	const ipLen = 65535
	mac := tcpip.LinkAddress("\x02\x00\x00\x00\x00\x01")
	peerMAC := tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02")
	ch := channel.New(16, mtu, mac)
	st, err := stack.New(stack.Config{Links: []stack.LinkConfig{{
		Name: "big0", Endpoint: ethernet.New(ch), NoLinkLocal: true,
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)

	var wq waiter.Queue
	ep, terr := st.GV().NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		t.Fatal(terr)
	}
	defer ep.Close()
	ep.SocketOptions().SetReceiveBufferSize(64<<20, true)
	src, dst := tcpip.AddrFrom4([4]byte{10, 9, 0, 2}), tcpip.AddrFrom4([4]byte{10, 9, 0, 1})
	if terr := ep.Bind(tcpip.FullAddress{Addr: dst, Port: 5353}); terr != nil {
		t.Fatal(terr)
	}
	payload := ipLen - header.IPv4MinimumSize - header.UDPMinimumSize
	frame := make([]byte, header.EthernetMinimumSize+ipLen)
	header.Ethernet(frame).Encode(&header.EthernetFields{SrcAddr: peerMAC, DstAddr: mac, Type: ipv4.ProtocolNumber})
	ip := header.IPv4(frame[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{TotalLength: ipLen, TTL: 64, Protocol: uint8(udp.ProtocolNumber), SrcAddr: src, DstAddr: dst})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(ip[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: 5000, DstPort: 5353, Length: uint16(header.UDPMinimumSize + payload)})
	xsum := header.PseudoHeaderChecksum(udp.ProtocolNumber, src, dst, uint16(header.UDPMinimumSize+payload))
	u.SetChecksum(^u.CalculateChecksum(checksum.Checksum(u.Payload(), xsum)))

	const n = 16
	pkts := make([]*gvstack.PacketBuffer, n)
	for i := range pkts {
		pkts[i] = gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, p := range pkts {
		ch.InjectInbound(0, p)
		p.DecRef()
	}
	runtime.ReadMemStats(&after)
	got := 0
	for {
		res, terr := ep.Read(discard{}, tcpip.ReadOptions{})
		if terr != nil {
			break
		}
		if res.Count != payload {
			t.Fatalf("datagram of %d bytes, want %d", res.Count, payload)
		}
		got++
	}
	if got != n {
		t.Fatalf("the endpoint received %d of %d datagrams", got, n)
	}
	per := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d bytes allocated per %d-byte datagram", per, payload)
	if per > 16<<10 {
		t.Errorf("the stack allocated %d bytes per datagram of %d: it copied the packet", per, payload)
	}
}

// discard is an io.Writer that drops what it is given.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
