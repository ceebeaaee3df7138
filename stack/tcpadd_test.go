package stack_test

// Tests of what this module's build adds to gVisor's TCP
// (third_party/gvisor-patches): the delayed acknowledgement (0004), with
// which a connection that answers what it receives sends its
// acknowledgement with the answer, the lazy SACK scoreboard (0005), and
// the endpoint's layout (0006).

import (
	"bytes"
	"reflect"
	"runtime"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/seqnum"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// roundTrip sends a request of n bytes from the peer. If answer, the
// stack's application reads it and writes back n bytes at once. It
// returns the stack's segments up to the one that carries the answer
// (or, without an answer, up to the acknowledgement of the request), then
// acknowledges the answer.
func (p *rawPeer) roundTrip(n int, answer bool) []segment {
	p.t.Helper()
	base := p.sndISS + 1
	p.send(header.TCPFlagAck|header.TCPFlagPsh, p.nxt, p.sentUpTo(base), fixPeerWnd, nil, bytes.Repeat([]byte{'q'}, n))
	p.nxt += uint32(n)
	if answer {
		p.readN(n)
		p.write(n)
	}
	var segs []segment
	deadline := time.Now().Add(2 * time.Second)
	for {
		s := p.recv(time.Until(deadline))
		if s.tcp == nil {
			p.t.Fatalf("round trip: no answer from the stack; got %v", segs)
		}
		segs = append(segs, s)
		if answer && len(s.payload) > 0 {
			p.answered += uint32(len(s.payload))
			if s.tcp.AckNumber() != p.nxt {
				p.t.Fatalf("the answer acknowledges %d, not the request's end %d", s.tcp.AckNumber(), p.nxt)
			}
			p.ack(p.sentUpTo(base), fixPeerWnd)
			return segs
		}
		if !answer && s.tcp.AckNumber() == p.nxt {
			return segs
		}
	}
}

// sentUpTo is the stack's sequence number after the answers so far.
func (p *rawPeer) sentUpTo(base uint32) uint32 { return base + p.answered }

// readN reads n bytes on the stack's side, waiting for them.
func (p *rawPeer) readN(n int) {
	p.t.Helper()
	we, ch := waiter.NewChannelEntry(waiter.ReadableEvents)
	p.epWaiter.EventRegister(&we)
	defer p.epWaiter.EventUnregister(&we)
	var buf bytes.Buffer
	deadline := time.Now().Add(2 * time.Second)
	for buf.Len() < n {
		_, err := p.ep.Read(&buf, tcpip.ReadOptions{})
		if _, ok := err.(*tcpip.ErrWouldBlock); ok {
			select {
			case <-ch:
			case <-time.After(time.Until(deadline)):
				p.t.Fatalf("the stack's application got %d of %d bytes", buf.Len(), n)
			}
			continue
		}
		if err != nil {
			p.t.Fatalf("read: %v", err)
		}
	}
}

// pureACKs counts the segments without data before the answer.
func pureACKs(segs []segment) int {
	n := 0
	for _, s := range segs {
		if len(s.payload) == 0 {
			n++
		}
	}
	return n
}

// Once a connection has answered a request, the acknowledgement of the
// next request rides on the answer: one segment instead of two.
func TestInteractiveACKRidesOnTheAnswer(t *testing.T) {
	p := newRawPeer(t, false, 0)
	first := p.roundTrip(100, true)
	if pureACKs(first) != 1 {
		t.Errorf("first request: %d pure ACKs before the answer, want 1 (not yet interactive): %v", pureACKs(first), first)
	}
	// The answer must come within the delay (1 ms); under load it may
	// not, and a late answer ends the interactive mode for a round.
	ridden := 0
	const rounds = 20
	for range rounds {
		if pureACKs(p.roundTrip(100, true)) == 0 {
			ridden++
		}
	}
	if ridden < rounds/4 {
		t.Fatalf("the ACK rode on the answer in %d of %d round trips", ridden, rounds)
	}
	t.Logf("the ACK rode on the answer in %d of %d round trips", ridden, rounds)
}

// With TCP_QUICKACK every request is acknowledged at once, before the
// application has read it.
func TestQuickAckAcknowledgesAtOnce(t *testing.T) {
	p := newRawPeer(t, false, 0)
	p.ep.SocketOptions().SetQuickAck(true)
	for i := range 10 {
		segs := p.roundTrip(100, true)
		if len(segs) != 2 || len(segs[0].payload) != 0 {
			t.Fatalf("round %d: %v, want a pure ACK then the answer", i, segs)
		}
	}
}

// A request that gets no answer is still acknowledged, by the delayed
// acknowledgement's timer, and the connection goes on.
func TestUnansweredRequestIsAcknowledged(t *testing.T) {
	p := newRawPeer(t, false, 0)
	for range 3 {
		p.roundTrip(100, true)
	}
	start := time.Now()
	segs := p.roundTrip(100, false)
	took := time.Since(start)
	if len(segs) != 1 || len(segs[0].payload) != 0 {
		t.Fatalf("unanswered request: %v, want one pure ACK", segs)
	}
	t.Logf("the unanswered request was acknowledged after %v", took)
	p.readN(100)
	if segs := p.roundTrip(100, true); segs[len(segs)-1].tcp.AckNumber() != p.nxt {
		t.Fatalf("after the delayed ACK: %v", segs)
	}
}

// A SACK scoreboard holds no tree until a SACK block comes, and gives
// it up once its blocks are all acknowledged (patch 0005): most
// connections never see one, and 10 000 idle ones held 3 MB of trees.
func TestSACKScoreboardIsLazy(t *testing.T) {
	defer func() { scoreboardSink = nil }()
	if n := testing.AllocsPerRun(100, func() { scoreboardSink = tcp.NewSACKScoreboard(1460, 1000) }); n != 1 {
		t.Errorf("a new scoreboard makes %v allocations, want 1 (no tree)", n)
	}
	sb := tcp.NewSACKScoreboard(1000, 0)
	blk := func(a, b uint32) header.SACKBlock {
		return header.SACKBlock{Start: seqnum.Value(a), End: seqnum.Value(b)}
	}
	if !sb.Empty() || sb.IsSACKED(blk(0, 10)) || sb.IsLost(0) {
		t.Fatal("an empty scoreboard reports SACKed or lost data")
	}
	if blocks, _ := sb.Copy(); blocks != nil {
		t.Fatalf("an empty scoreboard copies %v", blocks)
	}
	sb.Insert(blk(1000, 2000))
	sb.Insert(blk(3000, 4000))
	sb.Insert(blk(2000, 3000)) // joins the two
	if blocks, _ := sb.Copy(); len(blocks) != 1 || blocks[0] != blk(1000, 4000) {
		t.Fatalf("after three inserts: %v, want [1000 4000]", blocks)
	}
	if !sb.IsSACKED(blk(1500, 2500)) || sb.IsSACKED(blk(500, 1500)) || sb.Sacked() != 3000 {
		t.Fatalf("IsSACKED or Sacked wrong: %v", sb)
	}
	if !sb.IsLost(0) {
		t.Fatal("3000 bytes SACKed above 0 with an SMSS of 1000: 0 is lost")
	}
	sb.Delete(4000)
	if !sb.Empty() || sb.Sacked() != 0 {
		t.Fatalf("after acknowledging everything: %v", sb)
	}
	sb.Insert(blk(5000, 6000))
	if !sb.IsSACKED(blk(5000, 6000)) {
		t.Fatal("an insert after the tree was given up was lost")
	}
	sb.Reset()
	if !sb.Empty() {
		t.Fatal("Reset left blocks")
	}
}

// scoreboardSink keeps the scoreboards of an allocation count on the heap.
var scoreboardSink *tcp.SACKScoreboard

// The memory of an idle connection is mostly its gVisor endpoint and
// sender, each one allocation of a Go size class. Patches 0004 and 0006
// keep them in the 1536- and 896-byte classes (they took 1792 and 1024:
// an object of over 512 bytes with pointers also carries an 8-byte
// header). A field that grows either fails this test.
func TestTCPEndpointFitsItsSizeClass(t *testing.T) {
	ep := reflect.TypeOf(tcp.Endpoint{})
	snd, ok := ep.FieldByName("snd")
	if !ok {
		t.Fatal("tcp.Endpoint has no snd field")
	}
	for _, c := range []struct {
		name  string
		typ   reflect.Type
		class uint64 // its size class
		next  uint64 // the next one up
	}{
		{"tcp.Endpoint", ep, 1536, 1792},
		{"tcp.sender", snd.Type.Elem(), 896, 1024},
	} {
		if got := heapBytesPerObject(c.typ); got > (c.class+c.next)/2 {
			t.Errorf("a %s (%d bytes) takes %d bytes of heap: over the %d-byte size class", c.name, c.typ.Size(), got, c.class)
		}
	}
}

// heapBytesPerObject allocates objects of type typ and returns the heap
// each took, on average.
func heapBytesPerObject(typ reflect.Type) uint64 {
	const n = 4000
	keep := make([]reflect.Value, 0, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		keep = append(keep, reflect.New(typ))
	}
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(keep)
	return (after.HeapAlloc - before.HeapAlloc) / n
}
