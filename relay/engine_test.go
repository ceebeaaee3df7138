package relay

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"

	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack"
)

// The flow engine driven frame by frame, without root: a namespace peer
// made of hand-built frames (peer) calls the engine's divert function and
// reads what the engine writes to its wire; the far end is a server on
// the host's loopback, reached through Config.MapToHost.

// frameBuf is one frame the engine wrote (copied: no allocation).
type frameBuf struct {
	n int
	b [2048]byte
}

// chanWire is a Wire that hands every frame to a channel.
type chanWire struct{ frames chan frameBuf }

func (w *chanWire) WriteFrame(_ uint32, bufs [][]byte) error {
	var f frameBuf
	for _, b := range bufs {
		f.n += copy(f.b[f.n:], b)
	}
	w.frames <- f
	return nil
}

var (
	peerMAC  = [6]byte{0x02, 0, 0, 0, 0, 0x02}
	engMAC   = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	peerAddr = netip.MustParseAddr("10.0.9.2")
	farAddr  = netip.MustParseAddr("10.0.9.5") // mapped to the host's 127.0.0.1
	peerIP   = peerAddr.As4()
	farIP    = farAddr.As4()
)

// engineRig starts a gateway with the flow engine and returns its divert
// function and wire.
func engineRig(t testing.TB) (func([]byte) bool, *chanWire, *Gateway) {
	t.Helper()
	return engineRigWith(t, func(*Config) {})
}

// engineRigWith is engineRig with a configuration adjusted by adjust.
func engineRigWith(t testing.TB, adjust func(*Config)) (func([]byte) bool, *chanWire, *Gateway) {
	t.Helper()
	if err := probePeekOff(); err != nil {
		cienv.Skip(t, "flow engine: skipped: "+err.Error())
	}
	da, db := link.Pipe()
	la, _ := link.New(link.Options{Devices: []link.Device{da}})
	cfg := Config{Engine: EngineFlow, MapToHost: []netip.Addr{farAddr}, NSAddrs: []netip.Addr{peerAddr}}
	adjust(&cfg)
	g := New(cfg)
	st, err := stack.New(stack.Config{Init: g.Install, Links: []stack.LinkConfig{{
		Name: "eth0", Endpoint: la, Gateway: true, TxQueues: 1, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.9.1/24")},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	w := &chanWire{frames: make(chan frameBuf, 64)}
	divert, err := g.StartEngine(w, engMAC, 1500, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.Close()
		st.Close()
		db.Close()
	})
	return divert, w, g
}

// peer is one TCP connection of the namespace, frame by frame.
type peer struct {
	t         testing.TB
	divert    func([]byte) bool
	w         *chanWire
	sport     uint16
	dport     uint16
	seq, ack  uint32
	out       [1600]byte
	segFlags  header.TCPFlags
	payload   []byte
	segSeq    uint32
	segAck    uint32
	segWindow uint16
	// wnd is the window the peer advertises once wndSet (65535
	// before), scaled by 2⁷ once the handshake is done.
	wnd    uint16
	wndSet bool
	timer  *time.Timer
	frame  frameBuf // the last frame received, and its segment
	seg    segment
	// sack offers SACK in the peer's SYN; segSACK are the SACK blocks
	// of the last segment received.
	sack    bool
	segSACK []header.SACKBlock
	// skipOthers skips segments to other ports (of earlier
	// connections) rather than failing.
	skipOthers bool
}

// send builds a segment from the peer and gives it to the engine.
func (p *peer) send(flags header.TCPFlags, data []byte) bool {
	b := p.out[:0]
	b = append(b, engMAC[:]...)
	b = append(b, peerMAC[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(header.IPv4ProtocolNumber))
	optLen := 0
	if flags&header.TCPFlagSyn != 0 {
		optLen = 8
		if p.sack {
			optLen = 12
		}
	}
	ipLen := ip4HdrLen + tcpHdrLen + optLen + len(data)
	b = b[:ethHdrLen+ipLen]
	ip := header.IPv4(b[ethHdrLen:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(ipLen), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpipAddr(peerIP[:]), DstAddr: tcpipAddr(farIP[:])})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[ethHdrLen+ip4HdrLen:])
	tcp.Encode(&header.TCPFields{SrcPort: p.sport, DstPort: p.dport, SeqNum: p.seq, AckNum: p.ack,
		DataOffset: uint8(tcpHdrLen + optLen), Flags: flags, WindowSize: p.window()})
	if optLen > 0 {
		header.EncodeMSSOption(1460, tcp[tcpHdrLen:])
		tcp[tcpHdrLen+4] = header.TCPOptionNOP
		header.EncodeWSOption(7, tcp[tcpHdrLen+5:])
		if p.sack {
			tcp[tcpHdrLen+8], tcp[tcpHdrLen+9] = header.TCPOptionNOP, header.TCPOptionNOP
			header.EncodeSACKPermittedOption(tcp[tcpHdrLen+10:])
		}
	}
	copy(tcp[tcpHdrLen+optLen:], data)
	sum := pseudoSum(false, peerIP[:], farIP[:], len(tcp))
	tcp.SetChecksum(^checksum.Checksum(tcp, sum))
	return p.divert(b)
}

func (p *peer) window() uint16 {
	if p.wndSet {
		return p.wnd
	}
	return 65535
}

// recv waits for the engine's next segment to the peer and parses it.
func (p *peer) recv() {
	if p.timer == nil {
		p.timer = time.NewTimer(5 * time.Second)
	} else {
		p.timer.Reset(5 * time.Second)
	}
	select {
	case p.frame = <-p.w.frames:
		f, s := &p.frame, &p.seg
		if !parseSegment(f.b[:f.n], true, s) || s.udp {
			p.t.Fatalf("the engine wrote a frame that is not a valid TCP segment: % x", f.b[:min(f.n, 80)])
		}
		if s.dport != p.sport && p.skipOthers {
			p.recv() // a late segment of an earlier connection
			return
		}
		if s.dport != p.sport || s.sport != p.dport {
			p.t.Fatalf("segment for port %d from %d, want %d from %d", s.dport, s.sport, p.sport, p.dport)
		}
		p.segFlags, p.segSeq, p.segAck, p.segWindow = s.flags, s.seq, s.ack, s.wnd
		p.payload = append(p.payload[:0], s.payload...)
		th := header.TCP(f.b[ethHdrLen+ip4HdrLen : f.n])
		p.segSACK = append(p.segSACK[:0], header.ParseTCPOptions(th.Options()).SACKBlocks...)
	case <-p.timer.C:
		p.t.Fatal("no segment from the engine within 5 s")
	}
}

// roundTrip sends msg to the echo server and checks that it comes back,
// acknowledging it.
func (p *peer) roundTrip(msg string) {
	p.t.Helper()
	p.send(header.TCPFlagPsh|header.TCPFlagAck, []byte(msg))
	p.seq += uint32(len(msg))
	p.recvData()
	if string(p.payload) != msg {
		p.t.Fatalf("port %d: got %q from the echo server, want %q", p.sport, p.payload, msg)
	}
	p.ack += uint32(len(p.payload))
}

// recvData waits for the engine's next segment with data.
func (p *peer) recvData() {
	for p.recv(); len(p.payload) == 0; p.recv() {
	}
}

// open makes the handshake.
func (p *peer) open() {
	p.seq = 1000
	if !p.send(header.TCPFlagSyn, nil) {
		p.t.Fatal("the engine left a relayed SYN to the stack")
	}
	p.recv()
	if p.segFlags != header.TCPFlagSyn|header.TCPFlagAck || p.segAck != 1001 {
		p.t.Fatalf("got %v ack %d, want a SYN-ACK acknowledging 1001", p.segFlags, p.segAck)
	}
	p.seq, p.ack = 1001, p.segSeq+1
	p.send(header.TCPFlagAck, nil)
}

// echoServer serves echo on the host's loopback with raw system calls
// (no allocation per exchange) until the test ends; accept-only closes
// each connection at once instead.
func echoServer(t testing.TB, closeAtOnce bool) uint16 {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.File() // a blocking duplicate for the raw loop
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	lfd := int(f.Fd())
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []int
		done  bool // the cleanup began; protected by mu
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			fd, _, e := syscall.Syscall6(syscall.SYS_ACCEPT4, uintptr(lfd), 0, 0, syscall.SOCK_CLOEXEC, 0, 0)
			if e != 0 {
				return
			}
			if closeAtOnce {
				syscall.Close(int(fd))
				continue
			}
			mu.Lock()
			if done { // accepted after the cleanup's shutdowns
				mu.Unlock()
				syscall.Close(int(fd))
				continue
			}
			conns = append(conns, int(fd))
			mu.Unlock()
			wg.Add(1)
			go func(fd int) {
				defer wg.Done() // the cleanup closes fd
				_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
				var buf [512]byte
				for {
					n, err := syscall.Read(fd, buf[:])
					if n <= 0 || err != nil {
						syscall.Shutdown(fd, syscall.SHUT_WR) // the peer's FIN comes back
						return
					}
					if _, err := syscall.Write(fd, buf[:n]); err != nil {
						return
					}
				}
			}(int(fd))
		}
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	t.Cleanup(func() {
		syscall.Shutdown(lfd, syscall.SHUT_RDWR)
		mu.Lock()
		done = true
		for _, fd := range conns {
			syscall.Shutdown(fd, syscall.SHUT_RDWR)
		}
		mu.Unlock()
		wg.Wait()
		for _, fd := range conns {
			syscall.Close(fd)
		}
		f.Close()
	})
	return port
}

// TestFlowEngineExchangeAndClose: a handshake answered once the host
// connected, data both ways with sequence numbers and acknowledgements
// mapped, and a close from each side that leaves no flow.
func TestFlowEngineExchangeAndClose(t *testing.T) {
	divert, w, g := engineRig(t)
	port := echoServer(t, false)
	p := &peer{t: t, divert: divert, w: w, sport: 40000, dport: port}
	p.open()
	for i, msg := range []string{"hello", "relay", "x"} {
		p.send(header.TCPFlagPsh|header.TCPFlagAck, []byte(msg))
		p.seq += uint32(len(msg))
		p.recvData()
		if string(p.payload) != msg || p.segSeq != p.ack || p.segAck != p.seq {
			t.Fatalf("exchange %d: got %q seq %d ack %d, want %q seq %d ack %d", i, p.payload, p.segSeq, p.segAck, msg, p.ack, p.seq)
		}
		p.ack += uint32(len(p.payload))
	}
	if n := g.FlowCount(); n != 1 {
		t.Fatalf("FlowCount %d during the exchange, want 1", n)
	}
	// The peer's FIN reaches the host as a shutdown; the echo server
	// then closes, and its FIN comes back.
	p.send(header.TCPFlagFin|header.TCPFlagAck, nil)
	p.seq++
	for p.segFlags&header.TCPFlagFin == 0 {
		p.recv()
	}
	if p.segAck != p.seq {
		t.Fatalf("the FIN acknowledges %d, want %d", p.segAck, p.seq)
	}
	p.ack++
	p.send(header.TCPFlagAck, nil)
	if n := g.FlowCount(); n != 0 {
		t.Fatalf("FlowCount %d after both FINs were acknowledged, want 0", n)
	}
	up, down := g.Bytes()
	if up != 11 || down != 11 {
		t.Fatalf("bytes up %d, down %d; want 11 and 11", up, down)
	}
}

// TestFlowEngineRefusedPortIsReset: a SYN to a host port nobody listens
// on is answered with a reset, as the host's kernel answered the dial.
func TestFlowEngineRefusedPortIsReset(t *testing.T) {
	divert, w, g := engineRig(t)
	l, _ := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	p := &peer{t: t, divert: divert, w: w, sport: 40001, dport: port, seq: 5000}
	p.send(header.TCPFlagSyn, nil)
	p.recv()
	if p.segFlags&header.TCPFlagRst == 0 || p.segAck != 5001 {
		t.Fatalf("got %v ack %d, want a RST acknowledging 5001", p.segFlags, p.segAck)
	}
	if st := g.Stats(); st.DialFailures != 1 {
		t.Fatalf("dial failures %d, want 1", st.DialFailures)
	}
}

// TestFlowEngineRetransmitsUnacknowledgedData: data from the host that
// the peer does not acknowledge is sent again, from the same sequence
// number, after the retransmission timeout.
func TestFlowEngineRetransmitsUnacknowledgedData(t *testing.T) {
	divert, w, _ := engineRig(t)
	port := echoServer(t, false)
	p := &peer{t: t, divert: divert, w: w, sport: 40002, dport: port}
	p.open()
	p.send(header.TCPFlagPsh|header.TCPFlagAck, []byte("again"))
	p.seq += 5
	p.recvData()
	first := p.segSeq
	p.recvData() // not acknowledged: the same bytes come again
	if string(p.payload) != "again" || p.segSeq != first {
		t.Fatalf("retransmission %q at %d, want %q at %d", p.payload, p.segSeq, "again", first)
	}
}

// BenchmarkFlowEngineExchange: one byte from the namespace peer through
// the engine to a host echo and back, per operation: the engine's
// allocations per exchange (0; the peer and the host's echo allocate
// nothing, so what it reports is the engine's).
func BenchmarkFlowEngineExchange(b *testing.B) {
	divert, w, _ := engineRig(b)
	port := echoServer(b, false)
	p := &peer{t: b, divert: divert, w: w, sport: 40010, dport: port}
	p.open()
	msg := []byte("x")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.send(header.TCPFlagPsh|header.TCPFlagAck, msg)
		p.seq++
		p.recvData()
		p.ack += uint32(len(p.payload))
	}
}

// BenchmarkFlowEngineConnection: a handshake through the engine to a
// host listener and a reset, per operation: the engine's allocations per
// connection (0).
func BenchmarkFlowEngineConnection(b *testing.B) {
	divert, w, g := engineRig(b)
	port := echoServer(b, true)
	p := &peer{t: b, divert: divert, w: w, dport: port, skipOthers: true}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.sport = uint16(20000 + i%40000)
		p.open()
		p.send(header.TCPFlagRst|header.TCPFlagAck, nil)
	}
	b.StopTimer()
	for deadline := time.Now().Add(5 * time.Second); g.FlowCount() > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

// TestFlowEngineHoldsWhatCameAfterAHole: a segment after a hole is held
// (a duplicate ACK says where the hole is); once the hole comes, one
// acknowledgement covers both and the host receives them in order.
func TestFlowEngineHoldsWhatCameAfterAHole(t *testing.T) {
	divert, w, _ := engineRig(t)
	port := echoServer(t, false)
	p := &peer{t: t, divert: divert, w: w, sport: 40003, dport: port, sack: true}
	p.open()
	synAck := header.TCP(p.frame.b[ethHdrLen+ip4HdrLen : p.frame.n])
	if !header.ParseSynOptions(synAck.Options(), true).SACKPermitted {
		t.Fatal("the SYN-ACK does not permit SACK, which the SYN offered")
	}
	start := p.seq
	p.seq = start + 9
	p.send(header.TCPFlagPsh|header.TCPFlagAck, []byte("jkl"))
	p.recv()
	p.seq = start + 3
	p.send(header.TCPFlagPsh|header.TCPFlagAck, []byte("def"))
	p.recv()
	if p.segAck != start || len(p.payload) != 0 {
		t.Fatalf("after a hole: ack %d with %d bytes, want a duplicate ACK of %d", p.segAck, len(p.payload), start)
	}
	// The namespace permitted SACK: the duplicate ACK names what is
	// held beyond each hole.
	want := []header.SACKBlock{{Start: seqnum.Value(start + 3), End: seqnum.Value(start + 6)}, {Start: seqnum.Value(start + 9), End: seqnum.Value(start + 12)}}
	if !slices.Equal(p.segSACK, want) {
		t.Fatalf("SACK blocks %v, want %v", p.segSACK, want)
	}
	p.seq = start + 6
	p.send(header.TCPFlagPsh|header.TCPFlagAck, []byte("ghi"))
	p.recv()
	if p.segAck != start || len(p.segSACK) != 1 || p.segSACK[0] != (header.SACKBlock{Start: seqnum.Value(start + 3), End: seqnum.Value(start + 12)}) {
		t.Fatalf("ack %d with SACK blocks %v, want %d with one block from %d to %d", p.segAck, p.segSACK, start, start+3, start+12)
	}
	p.seq = start
	p.send(header.TCPFlagPsh|header.TCPFlagAck, []byte("abc"))
	var got []byte
	for len(got) < 12 {
		p.recv()
		if p.segAck == start+12 {
			got = append(got, p.payload...)
		}
	}
	if string(got) != "abcdefghijkl" {
		t.Fatalf("the host echoed %q, want %q", got, "abcdefghijkl")
	}
}

// TestFlowEngineProbesAClosedWindowSoItIsAnswered: a zero window (here
// an old one the wire delivered after a newer, open one) is probed with
// a segment below what the namespace acknowledged, which a receiver
// must answer; a bare ACK inside the window would be taken silently and
// the flow would wait for ever. Once the answer opens the window, what
// was in flight goes again at once.
func TestFlowEngineProbesAClosedWindowSoItIsAnswered(t *testing.T) {
	divert, w, _ := engineRig(t)
	port := echoServer(t, false)
	p := &peer{t: t, divert: divert, w: w, sport: 40004, dport: port}
	p.open()
	p.send(header.TCPFlagPsh|header.TCPFlagAck, []byte("probe"))
	p.seq += 5
	p.recvData()
	first := p.segSeq
	p.wnd, p.wndSet = 0, true
	p.send(header.TCPFlagAck, nil) // acknowledges nothing, window 0
	for p.recv(); len(p.payload) > 0; p.recv() {
	}
	if p.segSeq != p.ack-1 {
		t.Fatalf("the probe of a closed window has sequence number %d, want %d (one below what the peer acknowledged)", p.segSeq, p.ack-1)
	}
	p.wnd = 512 // the answer: open again
	sent := time.Now()
	p.send(header.TCPFlagAck, nil)
	p.recvData()
	if string(p.payload) != "probe" || p.segSeq != first {
		t.Fatalf("after the window opened: %q at %d, want %q at %d", p.payload, p.segSeq, "probe", first)
	}
	if d := time.Since(sent); d > time.Second {
		t.Fatalf("what was in flight came %v after the window opened: it waited for a timeout", d)
	}
}

// TestFlowEngineTakesAnAckBeyondARewind: after a timeout rewound the
// send sequence (go-back-N) and a smaller window let less go again, an
// acknowledgement of everything sent before the rewind is taken, not
// refused as acknowledging what was never sent.
func TestFlowEngineTakesAnAckBeyondARewind(t *testing.T) {
	divert, w, g := engineRig(t)
	port := echoServer(t, false)
	p := &peer{t: t, divert: divert, w: w, sport: 40005, dport: port}
	p.open()
	msg := bytes.Repeat([]byte("r"), 400)
	p.send(header.TCPFlagPsh|header.TCPFlagAck, msg)
	p.seq += uint32(len(msg))
	var got []byte
	for len(got) < len(msg) {
		p.recvData()
		got = append(got, p.payload...)
	}
	p.wnd, p.wndSet = 1, true // 128 bytes: the timeout sends only that much again
	p.send(header.TCPFlagAck, nil)
	p.recvData()
	if p.segSeq != p.ack || len(p.payload) != 128 {
		t.Fatalf("after the timeout: %d bytes at %d, want 128 at %d", len(p.payload), p.segSeq, p.ack)
	}
	p.ack += uint32(len(msg)) // everything the first round carried
	p.wnd = 512
	p.send(header.TCPFlagAck, nil)
	p.send(header.TCPFlagPsh|header.TCPFlagAck, []byte("next"))
	p.seq += 4
	p.recvData()
	if string(p.payload) != "next" || p.segSeq != p.ack {
		t.Fatalf("after the acknowledgement beyond the rewind: %q at %d, want %q at %d", p.payload, p.segSeq, "next", p.ack)
	}
	if _, down := g.Bytes(); down != uint64(len(msg)) {
		t.Fatalf("bytes down %d once the first round was acknowledged, want %d", down, len(msg))
	}
}

// TestFlowEngineSegmentsAtMostHalfTheLargestWindow: the segments to the
// namespace are bounded by half the largest window it advertised, so
// that one lost segment and a small one held after it cannot close its
// window (a receiver advertises none while its free space is below the
// largest segment it saw).
func TestFlowEngineSegmentsAtMostHalfTheLargestWindow(t *testing.T) {
	for _, c := range []struct {
		mss    uint16
		maxWnd uint32
		want   int
	}{
		{65480, 65536, 32768},
		{65480, 4 << 20, 65480},
		{1460, 65536, 1460},
		{1460, 2000, 1000},
		{1460, 400, 400}, // a tiny window is not halved
		{1460, 0, 1460},  // none advertised yet
		{1460, 20, 48},   // never below 68 bytes of IP payload less the header
	} {
		f := tcpFlow{mss: c.mss, maxWnd: c.maxWnd}
		if got := f.segSize(); got != c.want {
			t.Errorf("mss %d, largest window %d: segments of %d, want %d", c.mss, c.maxWnd, got, c.want)
		}
	}
}

// TestFlowEngineAllocatesNothing: an exchange and a connection through
// the engine allocate nothing, counted over every goroutine of the
// process (the engine's loop among them); a timer wheel slot used for
// the first time may still grow, hence less than one per run, not zero.
func TestFlowEngineAllocatesNothing(t *testing.T) {
	divert, w, _ := engineRig(t)
	port := echoServer(t, false)
	p := &peer{t: t, divert: divert, w: w, sport: 40020, dport: port}
	p.open()
	msg := []byte("x")
	exchange := func() {
		p.send(header.TCPFlagPsh|header.TCPFlagAck, msg)
		p.seq++
		p.recvData()
		p.ack += uint32(len(p.payload))
	}
	if n := testing.AllocsPerRun(300, exchange); n >= 1 {
		t.Errorf("%.2f allocations per exchange, want 0", n)
	}
	closing := echoServer(t, true)
	c := &peer{t: t, divert: divert, w: w, dport: closing, skipOthers: true}
	sport := uint16(30000)
	connect := func() {
		sport++
		c.sport = sport
		c.open()
		c.send(header.TCPFlagRst|header.TCPFlagAck, nil)
	}
	if n := testing.AllocsPerRun(300, connect); n >= 1 {
		t.Errorf("%.2f allocations per connection, want 0", n)
	}
}

// TestDefaultEngineFollowsTheKernel: the flow engine is the default
// exactly where its kernel feature is.
func TestDefaultEngineFollowsTheKernel(t *testing.T) {
	want := EngineStack
	if probePeekOff() == nil {
		want = EngineFlow
	}
	if got := DefaultEngine(); got != want {
		t.Fatalf("DefaultEngine() = %q, want %q", got, want)
	}
}

// TestFlowEngineSleepsWhenIdle: an engine that has had no flow yet
// waits without waking, from its start, and the scheduler does not
// interrupt the wait (it preempts a goroutine it has not seen yield for
// 10 ms, with a signal that ends the wait); a new connection still wakes
// it.
func TestFlowEngineSleepsWhenIdle(t *testing.T) {
	divert, w, g := engineRig(t)
	e := g.eng
	e.wake()
	wakeups := func() uint64 {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.wakeups
	}
	// The loop takes the wake-up, and once nothing happened for
	// restAfter it sleeps.
	time.Sleep(restAfter*time.Millisecond + 200*time.Millisecond)
	before := wakeups()
	time.Sleep(time.Second)
	if n := wakeups() - before; n > 2 {
		t.Fatalf("the idle engine woke %d times in a second", n)
	}
	port := echoServer(t, false)
	p := &peer{t: t, divert: divert, w: w, sport: 40001, dport: port}
	p.open()
	p.roundTrip("awake")
}

// fakeReads is a link for the engine to read (LinkReads) that counts
// what the engine does with it; it has no queue to wait on.
type fakeReads struct {
	polls, releases atomic.Int32
}

func (r *fakeReads) Watch(add func(fds []int) error, remove func(fds []int)) error {
	return add(nil)
}
func (r *fakeReads) Read(i, max int) (int, int, error) { return 0, 0, nil }
func (r *fakeReads) Release()                          { r.releases.Add(1) }

// TestFlowEngineEngagesWhileFlowsLive: the engine takes a processor of
// its own and the link's reads when a relayed flow begins, and gives
// both back once none has lived for idleCadence; the next flow takes
// them again.
func TestFlowEngineEngagesWhileFlowsLive(t *testing.T) {
	divert, w, g := engineRig(t)
	e := g.eng
	r := &fakeReads{}
	if err := g.ReadLink(func() (LinkReads, error) { r.polls.Add(1); return r, nil }); err != nil {
		t.Fatal(err)
	}
	procs := runtime.GOMAXPROCS(0)
	check := func(when string, engaged uint64, procs, polls, releases int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := [4]int{int(g.engineEngaged()), runtime.GOMAXPROCS(0), int(r.polls.Load()), int(r.releases.Load())}
			want := [4]int{int(engaged), procs, polls, releases}
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: engaged, GOMAXPROCS, polls, releases = %v, want %v", when, got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	check("before any flow", 0, procs, 0, 0)
	port := echoServer(t, false)
	for i, sport := range []uint16{40021, 40022} {
		p := &peer{t: t, divert: divert, w: w, sport: sport, dport: port, skipOthers: true}
		p.open()
		p.roundTrip("engaged")
		check("while a flow lives", 1, procs+1, i+1, i)
		p.send(header.TCPFlagRst|header.TCPFlagAck, nil)
		if n := g.FlowCount(); n != 0 {
			t.Fatalf("FlowCount %d after the reset, want 0", n)
		}
		check("right after the last flow ended", 1, procs+1, i+1, i)
		e.mu.Lock()
		e.idleAt = e.tick() - idleCadence // it ended long ago
		e.mu.Unlock()
		e.wake()
		check("idleCadence after the last flow", 0, procs, i+1, i+1)
	}
}

// TestFlowEngineFindsEachFlowOfItsTuple: segments of two connections,
// interleaved, each reach their own host socket; once one has ended,
// its four-tuple finds no flow, even after another connection took its
// place in the table.
func TestFlowEngineFindsEachFlowOfItsTuple(t *testing.T) {
	divert, w, g := engineRig(t)
	port := echoServer(t, false)
	a := &peer{t: t, divert: divert, w: w, sport: 40010, dport: port}
	b := &peer{t: t, divert: divert, w: w, sport: 40011, dport: port}
	a.skipOthers, b.skipOthers = true, true // the other's ACKs may come late
	a.open()
	b.open()
	for i := 0; i < 4; i++ {
		a.roundTrip("a" + strconv.Itoa(i))
		b.roundTrip("b" + strconv.Itoa(i))
	}
	// a resets: its flow is gone, and its slot is free for c.
	a.send(header.TCPFlagRst|header.TCPFlagAck, nil)
	if n := g.FlowCount(); n != 1 {
		t.Fatalf("FlowCount %d after a's reset, want 1", n)
	}
	c := &peer{t: t, divert: divert, w: w, sport: 40012, dport: port, skipOthers: true}
	c.open()
	c.roundTrip("c0")
	if a.send(header.TCPFlagPsh|header.TCPFlagAck, []byte("late")) {
		t.Fatal("a segment of the ended connection was taken by the engine")
	}
	b.roundTrip("b4")
	c.roundTrip("c1")
}
