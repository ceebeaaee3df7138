package stack_test

// Tests of the fixes this module's build makes to gVisor's TCP
// (third_party/gvisor-patches, applied by scripts/vendor-gvisor.sh). Each
// plays the peer of one connection of a tapstack stack with hand-made
// segments through a gVisor channel link, and fails on the unpatched
// gVisor: the connection would stall for good.

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tapstack/tapstack/stack"
)

var (
	fixStackAddr = tcpip.AddrFrom4([4]byte{10, 7, 0, 1})
	fixPeerAddr  = tcpip.AddrFrom4([4]byte{10, 7, 0, 2})
)

const (
	fixStackPort = 80
	fixPeerPort  = 40000
	fixMSS       = 1000
	fixPeerWnd   = 60000
)

// rawPeer is the far end of one TCP connection, played by the test:
// it writes IPv4 segments into a stack's channel link and reads the
// stack's. Windows are not scaled, and there are no timestamps unless
// newRawPeerTS asks for them.
type rawPeer struct {
	t  *testing.T
	ch *channel.Endpoint
	// ep is the stack's end of the connection, once accepted.
	ep tcpip.Endpoint
	// nxt is the peer's next sequence number; sndISS the stack's
	// initial sequence number.
	nxt, sndISS uint32
	// mss is the payload of the stack's first full data segment.
	mss int
	// epWaiter is ep's waiter queue.
	epWaiter *waiter.Queue
	// answered counts the bytes of data the stack sent in round trips.
	answered uint32
}

type segment struct {
	tcp     header.TCP
	payload []byte
}

func (s segment) seq() uint32 { return s.tcp.SequenceNumber() }

func (s segment) String() string {
	if s.tcp == nil {
		return "nothing"
	}
	return fmt.Sprintf("[%v] seq %d ack %d win %d len %d", s.tcp.Flags(), s.seq(), s.tcp.AckNumber(), s.tcp.WindowSize(), len(s.payload))
}

// newRawPeer makes a stack with one channel link, a listener on
// fixStackPort (rcvBuf, if not 0, is its receive buffer) and a
// connection to it from the peer, and accepts it.
func newRawPeer(t *testing.T, sack bool, rcvBuf int) *rawPeer {
	t.Helper()
	return newRawPeerWS(t, sack, false, rcvBuf)
}

// newRawPeerWS is newRawPeer whose SYN offers window scaling (ws; the
// peer's own shift is 0, so its windows stay unscaled), so that the
// stack scales the windows it advertises.
func newRawPeerWS(t *testing.T, sack, ws bool, rcvBuf int) *rawPeer {
	t.Helper()
	return newRawPeerTS(t, sack, ws, false, rcvBuf, nil)
}

// newRawPeerTS is newRawPeerWS whose SYN offers timestamps too (ts),
// with TSval tsPeerSYN: the stack then puts timestamps on every segment
// and the peer must too (tsOpts). If synAck is not nil, it gets the
// stack's SYN-ACK before the peer acknowledges it, and returns the one
// the peer acknowledges (a retransmission, say).
func newRawPeerTS(t *testing.T, sack, ws, ts bool, rcvBuf int, synAck func(*rawPeer, segment) segment) *rawPeer {
	t.Helper()
	ch := channel.New(1024, 1500, "")
	st, err := stack.New(stack.Config{Links: []stack.LinkConfig{{
		Name: "raw0", Endpoint: ch, NoLinkLocal: true,
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.7.0.1/24")},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	var wq waiter.Queue
	ln, terr := st.GV().NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		t.Fatal(terr)
	}
	t.Cleanup(ln.Close)
	if rcvBuf > 0 {
		ln.SocketOptions().SetReceiveBufferSize(int64(rcvBuf), true)
	}
	if err := ln.Bind(tcpip.FullAddress{Addr: fixStackAddr, Port: fixStackPort}); err != nil {
		t.Fatal(err)
	}
	if err := ln.Listen(4); err != nil {
		t.Fatal(err)
	}
	p := &rawPeer{t: t, ch: ch, nxt: 1000}
	opts := make([]byte, 12)
	if ts {
		opts = make([]byte, 24)
	}
	header.EncodeMSSOption(fixMSS, opts)
	n := 4
	if sack {
		n += header.EncodeSACKPermittedOption(opts[n:])
	}
	if ws {
		n += header.EncodeNOP(opts[n:])
		n += header.EncodeWSOption(0, opts[n:])
	}
	if ts {
		n += header.EncodeTSOption(tsPeerSYN, 0, opts[n:])
	}
	for n < len(opts) {
		n += header.EncodeNOP(opts[n:])
	}
	p.send(header.TCPFlagSyn, p.nxt, 0, fixPeerWnd, opts, nil)
	p.nxt++
	sa := p.recv(time.Second)
	if sa.tcp == nil || sa.tcp.Flags() != header.TCPFlagSyn|header.TCPFlagAck {
		t.Fatalf("no SYN-ACK: %v", sa)
	}
	if synAck != nil {
		sa = synAck(p, sa)
	}
	p.sndISS = sa.seq()
	if ts {
		p.send(header.TCPFlagAck, p.nxt, p.sndISS+1, fixPeerWnd, tsOpts(tsPeerSYN+950, sa), nil)
	} else {
		p.ack(p.sndISS+1, fixPeerWnd)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		ep, epWaiter, err := ln.Accept(nil)
		if err == nil {
			p.ep, p.epWaiter = ep, epWaiter
			t.Cleanup(ep.Close)
			return p
		}
		if _, ok := err.(*tcpip.ErrWouldBlock); !ok || time.Now().After(deadline) {
			t.Fatalf("accept: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// send injects one segment from the peer.
func (p *rawPeer) send(flags header.TCPFlags, seq, ack uint32, wnd uint16, opts, payload []byte) {
	tcpLen := header.TCPMinimumSize + len(opts)
	b := make([]byte, header.IPv4MinimumSize+tcpLen+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: fixPeerAddr, DstAddr: fixStackAddr,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	th := header.TCP(b[header.IPv4MinimumSize:])
	th.Encode(&header.TCPFields{
		SrcPort: fixPeerPort, DstPort: fixStackPort, SeqNum: seq, AckNum: ack,
		DataOffset: uint8(tcpLen), Flags: flags, WindowSize: wnd,
	})
	copy(th[header.TCPMinimumSize:], opts)
	copy(th[tcpLen:], payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, fixPeerAddr, fixStackAddr, uint16(tcpLen+len(payload)))
	xsum = checksum.Checksum(payload, xsum)
	th.SetChecksum(^th.CalculateChecksum(xsum))
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	p.ch.InjectInbound(header.IPv4ProtocolNumber, pkt)
	pkt.DecRef()
}

// ack sends a pure ACK.
func (p *rawPeer) ack(ack uint32, wnd uint16) {
	p.send(header.TCPFlagAck, p.nxt, ack, wnd, nil, nil)
}

// sackOpts encodes SACK blocks of stack sequence numbers.
func sackOpts(blocks ...[2]uint32) []byte {
	b := []byte{1, 1, 5, byte(2 + 8*len(blocks))}
	for _, bl := range blocks {
		b = append(b, byte(bl[0]>>24), byte(bl[0]>>16), byte(bl[0]>>8), byte(bl[0]))
		b = append(b, byte(bl[1]>>24), byte(bl[1]>>16), byte(bl[1]>>8), byte(bl[1]))
	}
	return b
}

// recv returns the stack's next TCP segment, or a zero segment if none
// comes within d.
func (p *rawPeer) recv(d time.Duration) segment {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		pkt := p.ch.ReadContext(ctx)
		if pkt == nil {
			return segment{}
		}
		v := pkt.ToView()
		b := bytes.Clone(v.AsSlice())
		v.Release()
		pkt.DecRef()
		ip := header.IPv4(b)
		if !ip.IsValid(len(b)) || ip.TransportProtocol() != header.TCPProtocolNumber {
			continue
		}
		th := header.TCP(ip.Payload())
		return segment{tcp: th, payload: th.Payload()}
	}
}

// waitAck waits for the stack to acknowledge the peer's data up to ack.
func (p *rawPeer) waitAck(ack uint32) {
	p.t.Helper()
	for {
		s := p.recv(2 * time.Second)
		if s.tcp == nil {
			p.t.Fatalf("the stack did not acknowledge %d", ack)
		}
		if s.tcp.AckNumber() == ack {
			return
		}
	}
}

// await returns the first of the stack's segments within d that ok
// accepts, skipping the others; a zero segment if none.
func (p *rawPeer) await(d time.Duration, ok func(segment) bool) segment {
	deadline := time.Now().Add(d)
	for {
		s := p.recv(time.Until(deadline))
		if s.tcp == nil || ok(s) {
			return s
		}
	}
}

// write makes the stack's application write n bytes.
func (p *rawPeer) write(n int) {
	p.t.Helper()
	if _, err := p.ep.Write(bytes.NewReader(make([]byte, n)), tcpip.WriteOptions{}); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

// collect reads the stack's segments until the data up to end (stack
// sequence numbers) has been seen or d passes; it returns the highest
// sequence number seen.
func (p *rawPeer) collect(end uint32, d time.Duration) (high uint32) {
	high = p.sndISS + 1
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && high != end {
		s := p.recv(time.Until(deadline))
		if s.tcp == nil {
			break
		}
		if p.mss == 0 && s.seq() == p.sndISS+1 {
			p.mss = len(s.payload)
		}
		if e := s.seq() + uint32(len(s.payload)); len(s.payload) > 0 && int32(e-high) > 0 {
			high = e
		}
	}
	return high
}

// A stale ACK that arrives late (reordered) with a small window must not
// shrink the send window: the stack would have nothing it may send, no
// ACK would come to open it again, and the connection would hang.
func TestStaleACKDoesNotShrinkTheSendWindow(t *testing.T) {
	p := newRawPeer(t, false, 0)
	base := p.sndISS + 1
	p.write(3 * fixMSS)
	if high := p.collect(base+3*fixMSS, 2*time.Second); high != base+3*fixMSS {
		t.Fatalf("the stack sent up to %d of %d", high-base, 3*fixMSS)
	}
	p.ack(base+fixMSS, fixPeerWnd)
	p.ack(base+3*fixMSS, fixPeerWnd)
	// The first ACK again, late, as if reordered, with a window of 1,
	// and with a byte of data so that the stack's ACK of it says the
	// segments were processed.
	p.send(header.TCPFlagAck|header.TCPFlagPsh, p.nxt, base+fixMSS, 1, nil, []byte{1})
	p.nxt++
	p.waitAck(p.nxt)
	p.write(3 * fixMSS)
	if high := p.collect(base+6*fixMSS, 2*time.Second); high != base+6*fixMSS {
		t.Fatalf("after a stale ACK with window 1 the stack sent %d of the next %d bytes: it took the stale window", int32(high-base)-3*fixMSS, 3*fixMSS)
	}
}

// A segment that starts at RCV.NXT while the stack's receive window is
// closed carries a valid ACK: the stack must take it, or a peer that
// retransmits into the closed window while acknowledging everything
// deadlocks with an application that reads only once it could write.
func TestACKIntoAClosedWindowIsTaken(t *testing.T) {
	p := newRawPeer(t, false, 4096)
	base := p.sndISS + 1
	p.write(fixMSS)
	if high := p.collect(base+fixMSS, 2*time.Second); high != base+fixMSS {
		t.Fatalf("the stack sent %d of %d bytes", high-base, fixMSS)
	}
	// Fill the stack's receive buffer (its application does not read),
	// acknowledging nothing of what it sent, until its window is 0.
	wnd := fixPeerWnd
	for i := 0; wnd > 0; i++ {
		if i == 200 {
			t.Fatalf("the stack's window never closed (last %d)", wnd)
		}
		n := min(fixMSS, wnd)
		p.send(header.TCPFlagAck|header.TCPFlagPsh, p.nxt, base, fixPeerWnd, nil, make([]byte, n))
		p.nxt += uint32(n)
		for {
			s := p.recv(time.Second)
			if s.tcp == nil {
				t.Fatalf("no ACK from the stack for %d bytes", p.nxt-1001)
			}
			if s.tcp.AckNumber() == p.nxt {
				wnd = int(s.tcp.WindowSize())
				break
			}
			// A retransmission of the stack's data: not acknowledged.
		}
	}
	// Data at RCV.NXT (it cannot be taken) that acknowledges all the
	// stack sent. Once that is taken, the stack has nothing to resend.
	p.ch.Drain()
	p.send(header.TCPFlagAck|header.TCPFlagPsh, p.nxt, base+fixMSS, fixPeerWnd, nil, make([]byte, 100))
	deadline := time.Now().Add(3 * time.Second)
	for {
		s := p.recv(time.Until(deadline))
		if s.tcp == nil {
			return
		}
		if len(s.payload) > 0 {
			t.Fatalf("the ACK of a segment at RCV.NXT into a closed window was not taken: the stack resent %v", s)
		}
	}
}

// A window that the window scale rounds down to zero still accepts what
// the stack advertised before (patch 0010): the peer may fill it, and
// its ACKs then carry the sequence number at the end of what it sent.
// Refused, they never reach the stack's sender, whose application may
// be waiting for them before it reads again.
func TestAWindowRoundedDownToZeroStillTakesWhatWasAdvertised(t *testing.T) {
	p := newRawPeerWS(t, false, true, 1<<20)
	base := p.sndISS + 1
	var shift uint8
	for i := uint8(1); i < 15; i++ {
		if (1<<20)>>i <= 0xffff {
			shift = i
			break
		}
	}
	// Fill the stack's buffer (its application does not read), leaving
	// half a unit of the scale of the right edge it offered, until it
	// advertises a window of 0 with that much still offered.
	var edge uint32 // the right edge the stack offered, the highest
	for i := 0; ; i++ {
		if i == 5000 {
			t.Fatal("the stack's window never came down to less than a unit of its scale")
		}
		n := uint32(fixMSS)
		if rem := edge - p.nxt; edge != 0 && rem < fixMSS+1<<shift {
			n = rem - 1<<shift/2
		}
		p.send(header.TCPFlagAck|header.TCPFlagPsh, p.nxt, base, fixPeerWnd, nil, make([]byte, n))
		p.nxt += n
		s := p.await(time.Second, func(s segment) bool { return s.tcp.AckNumber() == p.nxt })
		if s.tcp == nil {
			t.Fatalf("the stack did not take data inside the window it advertised (%d bytes at %d, its edge %d)", n, p.nxt-n-1001, edge-1001)
		}
		if e := p.nxt + uint32(s.tcp.WindowSize())<<shift; int32(e-edge) > 0 {
			edge = e
		}
		if s.tcp.WindowSize() == 0 && edge != p.nxt {
			break
		}
	}
	// The last of the window: the stack's to take.
	last := edge - p.nxt
	p.send(header.TCPFlagAck|header.TCPFlagPsh, p.nxt, base, fixPeerWnd, nil, make([]byte, last))
	p.nxt += last
	if s := p.await(time.Second, func(s segment) bool { return s.tcp.AckNumber() == p.nxt }); s.tcp == nil {
		t.Fatalf("the stack refused the last %d bytes of the window it advertised (its scale rounded it down to zero)", last)
	}
}

// A FIN sent alone during SACK recovery, whose data is then all
// acknowledged, leaves the stack with an estimate of 0 packets in flight
// (recovery's pipe counts no FIN). The tail loss probe resends the FIN
// once; if that is lost too, the retransmission timer must still resend
// it, or the connection never closes.
func TestLoneFINIsResentAfterTheLossProbe(t *testing.T) {
	p := newRawPeer(t, true, 0)
	base := p.sndISS + 1
	const segs = 5
	p.write(segs * fixMSS)
	end := base + segs*fixMSS
	if high := p.collect(end, 2*time.Second); high != end {
		t.Fatalf("the stack sent %d of %d bytes", high-base, segs*fixMSS)
	}
	// The first segment is lost: duplicate ACKs SACK the others and the
	// stack enters recovery. (Segments are a bit shorter than fixMSS:
	// room for options is kept.)
	first := base + uint32(p.mss)
	for i := 0; i < 4; i++ {
		p.send(header.TCPFlagAck, p.nxt, base, fixPeerWnd, sackOpts([2]uint32{first, first + uint32(i+1)*(end-first)/4}), nil)
	}
	// (A loss probe of the last segment may come first when the test
	// runs slowly.)
	if s := p.await(2*time.Second, func(s segment) bool { return s.seq() == base && len(s.payload) > 0 }); s.tcp == nil {
		t.Fatalf("the first segment (seq %d) was not resent", base)
	}
	if err := p.ep.Shutdown(tcpip.ShutdownWrite); err != nil {
		t.Fatal(err)
	}
	if s := p.await(2*time.Second, func(s segment) bool { return s.tcp.Flags().Contains(header.TCPFlagFin) }); s.tcp == nil || s.seq() != end {
		t.Fatalf("want a FIN at %d, got %v", segs*fixMSS, s)
	}
	// All data acknowledged, not the FIN (lost, and so is what follows).
	p.ack(end, fixPeerWnd)
	start := time.Now()
	var fins []time.Duration
	for len(fins) < 2 && time.Since(start) < 5*time.Second {
		s := p.recv(5*time.Second - time.Since(start))
		if s.tcp == nil {
			break
		}
		if s.tcp.Flags().Contains(header.TCPFlagFin) {
			fins = append(fins, time.Since(start))
		}
	}
	if len(fins) < 2 {
		t.Fatalf("the FIN was resent %d times in 5 s (after %v) once its data was acknowledged; want the loss probe and a retransmission", len(fins), fins)
	}
}

// A stack that closed its side for writing still receives, and SACKs
// what arrives out of order in FIN-WAIT-1 and FIN-WAIT-2 as it does
// while established: a sender in SACK recovery (gVisor's, with RACK)
// learns nothing from duplicate ACKs without blocks, and waits for its
// retransmission timeout, seconds once its estimate of the round trip
// has grown under loss.
func TestHalfClosedStackSACKsWhatArrivesOutOfOrder(t *testing.T) {
	p := newRawPeer(t, true, 0)
	if err := p.ep.Shutdown(tcpip.ShutdownWrite); err != nil {
		t.Fatal(err)
	}
	fin := p.await(2*time.Second, func(s segment) bool { return s.tcp.Flags().Contains(header.TCPFlagFin) })
	if fin.tcp == nil {
		t.Fatal("the stack sent no FIN")
	}
	sacked := func(state string, seq, ack uint32) {
		t.Helper()
		// The peer's segment at p.nxt is lost; the next one comes.
		p.send(header.TCPFlagAck, seq, ack, fixPeerWnd, nil, make([]byte, 100))
		s := p.await(2*time.Second, func(s segment) bool { return s.tcp.AckNumber() == p.nxt })
		if s.tcp == nil {
			t.Fatalf("%s: no duplicate ACK of %d", state, p.nxt)
		}
		blocks := header.ParseTCPOptions(s.tcp.Options()).SACKBlocks
		for _, b := range blocks {
			if uint32(b.Start) <= seq && seq+100 <= uint32(b.End) {
				return
			}
		}
		t.Fatalf("%s: the ACK of %d SACKs %v; want a block covering %d–%d", state, p.nxt, blocks, seq, seq+100)
	}
	// The FIN is not acknowledged yet: FIN-WAIT-1.
	sacked("FIN-WAIT-1", p.nxt+100, fin.seq())
	if st := tcp.EndpointState(p.ep.State()); st != tcp.StateFinWait1 {
		t.Fatalf("the stack is in %v, want FIN-WAIT-1", st)
	}
	p.ack(fin.seq()+1, fixPeerWnd)
	sacked("FIN-WAIT-2", p.nxt+300, fin.seq()+1)
	if st := tcp.EndpointState(p.ep.State()); st != tcp.StateFinWait2 {
		t.Fatalf("the stack is in %v, want FIN-WAIT-2", st)
	}
	// The lost segment fills the first hole: the ACK moves up to the
	// second.
	p.send(header.TCPFlagAck, p.nxt, fin.seq()+1, fixPeerWnd, nil, make([]byte, 100))
	p.waitAck(p.nxt + 200)
}

// tsPeerSYN is the TSval of a timestamping raw peer's SYN.
const tsPeerSYN = 1000

// tsOpts is a timestamp option with TSval tsVal, echoing the TSval of
// the stack's segment s.
func tsOpts(tsVal uint32, s segment) []byte {
	b := make([]byte, 12)
	header.EncodeNOP(b)
	header.EncodeNOP(b[1:])
	header.EncodeTSOption(tsVal, header.ParseTCPOptions(s.tcp.Options()).TSVal, b[2:])
	return b
}

// The ACK of a FIN echoes the FIN's timestamp (RFC 7323 4.3), not the
// one of the segment before it: gVisor acknowledged a FIN before it took
// the FIN's timestamp. A FIN resent after a loss was then acknowledged
// with the timestamp of the data before it, and its sender measured a
// round trip as long as its retransmission timeout: two gVisor stacks
// under loss grew their estimates to seconds, and their timeouts to
// tens of seconds.
func TestFINIsAcknowledgedWithItsOwnTimestamp(t *testing.T) {
	p := newRawPeerTS(t, true, false, true, 0, nil)
	p.write(10) // something of the stack's to echo from now on
	data := p.await(2*time.Second, func(s segment) bool { return len(s.payload) > 0 })
	if data.tcp == nil {
		t.Fatal("the stack sent no data")
	}
	p.send(header.TCPFlagAck|header.TCPFlagPsh, p.nxt, data.seq()+10, fixPeerWnd, tsOpts(2000, data), make([]byte, 100))
	p.nxt += 100
	if s := p.await(2*time.Second, func(s segment) bool { return s.tcp.AckNumber() == p.nxt }); s.tcp == nil {
		t.Fatalf("the stack did not acknowledge the data")
	} else if ecr := header.ParseTCPOptions(s.tcp.Options()).TSEcr; ecr != 2000 {
		t.Fatalf("the ACK of the data echoes %d, want 2000", ecr)
	}
	// The FIN comes a while later (after a loss, its retransmission).
	p.send(header.TCPFlagAck|header.TCPFlagFin, p.nxt, data.seq()+10, fixPeerWnd, tsOpts(7000, data), nil)
	s := p.await(2*time.Second, func(s segment) bool { return s.tcp.AckNumber() == p.nxt+1 })
	if s.tcp == nil {
		t.Fatal("the stack did not acknowledge the FIN")
	}
	if ecr := header.ParseTCPOptions(s.tcp.Options()).TSEcr; ecr != 7000 {
		t.Fatalf("the ACK of the FIN echoes TSval %d, want the FIN's 7000", ecr)
	}
}

// A SYN-ACK resent after a loss carries a timestamp of its own time and
// echoes the peer's latest SYN, so that each side measures its round
// trip from what it sent last, not from the first SYN or SYN-ACK: gVisor
// resent its SYN and SYN-ACK with the first one's timestamps, and a
// connection whose handshake lost a segment or two started with a round
// trip of 1–3 s and a retransmission timeout of several seconds (the
// SYN's timer backs off from 1 s).
func TestResentSYNACKCarriesAFreshTimestamp(t *testing.T) {
	const resentSYN = tsPeerSYN + 900
	var first, resent segment
	p := newRawPeerTS(t, true, false, true, 0, func(p *rawPeer, sa segment) segment {
		first = sa
		// The first SYN-ACK is lost: the peer resends its SYN, with a
		// later timestamp, and waits for the next SYN-ACK.
		opts := make([]byte, 16)
		header.EncodeMSSOption(fixMSS, opts)
		header.EncodeSACKPermittedOption(opts[4:])
		header.EncodeTSOption(resentSYN, 0, opts[6:])
		p.send(header.TCPFlagSyn, p.nxt-1, 0, fixPeerWnd, opts, nil)
		resent = p.await(3*time.Second, func(s segment) bool { return s.tcp.Flags() == header.TCPFlagSyn|header.TCPFlagAck })
		if resent.tcp == nil {
			t.Fatal("the SYN-ACK was not resent")
		}
		return resent
	})
	v0 := header.ParseTCPOptions(first.tcp.Options()).TSVal
	o1 := header.ParseTCPOptions(resent.tcp.Options())
	if int32(o1.TSVal-v0) < 500 { // ms: the timer waits 1 s
		t.Fatalf("the resent SYN-ACK's TSval is %d, the first's %d: want it about 1 s later", o1.TSVal, v0)
	}
	if o1.TSEcr != resentSYN {
		t.Fatalf("the resent SYN-ACK echoes TSval %d, want the resent SYN's %d", o1.TSEcr, resentSYN)
	}
	var info tcpip.TCPInfoOption
	if err := p.ep.GetSockOpt(&info); err != nil {
		t.Fatal(err)
	}
	if info.RTT > 300*time.Millisecond {
		t.Fatalf("the connection starts with a round trip of %v, measured from the first SYN-ACK", info.RTT)
	}
}

// A FIN that arrives before the data it follows (that data was lost) is
// SACKed, as Linux does, and taken once the data comes. gVisor's blocks
// covered only data, so a lost last segment before a FIN drew duplicate
// ACKs without blocks, and a sender in SACK recovery waited for its loss
// probe and then its retransmission timeout; and when the data came, a
// FIN without data that had waited for it was dropped as if already
// acknowledged (its length, 0, less one wrapped), so the peer had to
// send it again after another timeout.
func TestOutOfOrderFINIsSACKedAndTaken(t *testing.T) {
	p := newRawPeer(t, true, 0)
	// The peer's last 100 bytes are lost; its FIN comes.
	fin := p.nxt + 100
	p.send(header.TCPFlagAck|header.TCPFlagFin, fin, p.sndISS+1, fixPeerWnd, nil, nil)
	s := p.await(2*time.Second, func(s segment) bool { return s.tcp.AckNumber() == p.nxt })
	if s.tcp == nil {
		t.Fatalf("no duplicate ACK of %d", p.nxt)
	}
	blocks := header.ParseTCPOptions(s.tcp.Options()).SACKBlocks
	if len(blocks) != 1 || uint32(blocks[0].Start) != fin || uint32(blocks[0].End) != fin+1 {
		t.Fatalf("the ACK of %d SACKs %v; want the FIN, %d–%d", p.nxt, blocks, fin, fin+1)
	}
	// The lost data comes: the FIN is taken with it.
	p.send(header.TCPFlagAck, p.nxt, p.sndISS+1, fixPeerWnd, nil, make([]byte, 100))
	p.waitAck(fin + 1)
}
