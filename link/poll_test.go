package link_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tapstack/tapstack/link"
)

// testEtherType marks the test's frames (IEEE local experimental).
const testEtherType = 0x88b5

// recordingDispatcher keeps the counters of the test's frames it gets.
type recordingDispatcher struct {
	mu  sync.Mutex
	got []uint32
}

func (d *recordingDispatcher) DeliverNetworkPacket(p tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if p != testEtherType {
		return
	}
	b := pkt.Data().AsRange().ToSlice()
	if len(b) < 4 {
		return
	}
	d.mu.Lock()
	d.got = append(d.got, binary.BigEndian.Uint32(b))
	d.mu.Unlock()
}

func (*recordingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// checkOrder fails t unless the frames came numbered 0, 1, 2, ...
func (d *recordingDispatcher) checkOrder(t *testing.T) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, v := range d.got {
		if v != uint32(i) {
			t.Errorf("frame %d was %d: lost or out of order", i, v)
			return
		}
	}
}

func (d *recordingDispatcher) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.got)
}

// packetSocket is an AF_PACKET socket on the TAP's kernel side: what it
// sends, the endpoint reads; what the endpoint writes, it receives.
type packetSocket struct {
	fd, ifindex int
	mac         net.HardwareAddr
}

func openPacketSocket(t *testing.T, ifindex int, mac net.HardwareAddr) *packetSocket {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(testEtherType)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(testEtherType), Ifindex: ifindex}); err != nil {
		t.Fatal(err)
	}
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return &packetSocket{fd: fd, ifindex: ifindex, mac: mac}
}

// send sends frames numbered from..to-1 to dst.
func (p *packetSocket) send(t *testing.T, dst net.HardwareAddr, from, to uint32) {
	t.Helper()
	for i := from; i < to; i++ {
		frame := make([]byte, 14+46)
		copy(frame, dst)
		copy(frame[6:], p.mac)
		binary.BigEndian.PutUint16(frame[12:], testEtherType)
		binary.BigEndian.PutUint32(frame[14:], i)
		sa := &unix.SockaddrLinklayer{Ifindex: p.ifindex, Halen: 6, Protocol: htons(testEtherType)}
		copy(sa.Addr[:], dst)
		if err := unix.Sendto(p.fd, frame, 0, sa); err != nil {
			t.Fatalf("send frame %d: %v", i, err)
		}
	}
}

// recv receives one of the test's frames and returns its counter.
func (p *packetSocket) recv(t *testing.T) uint32 {
	t.Helper()
	b := make([]byte, 2048)
	for {
		n, _, err := unix.Recvfrom(p.fd, b, 0)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if n >= 18 && binary.BigEndian.Uint16(b[12:]) == testEtherType {
			return binary.BigEndian.Uint32(b[14:])
		}
	}
}

// waitFor polls cond for up to 2 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 2 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pollLoop is a poll loop of the test's own: an epoll set that waits
// on what Watch adds.
type pollLoop struct {
	epfd    int
	removed chan []int
}

func newPollLoop(t *testing.T, r *link.Reads) *pollLoop {
	t.Helper()
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(epfd) })
	l := &pollLoop{epfd: epfd, removed: make(chan []int, 1)}
	err = r.Watch(func(fds []int) error {
		for i, fd := range fds {
			if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}); err != nil {
				return err
			}
		}
		return nil
	}, func(fds []int) {
		for _, fd := range fds {
			_ = unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, fd, nil)
		}
		l.removed <- fds
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// run reads until n frames went to the stack, or an error.
func (l *pollLoop) run(t *testing.T, r *link.Reads, n int) error {
	t.Helper()
	var events [4]unix.EpollEvent
	stacked := 0
	deadline := time.Now().Add(2 * time.Second)
	for stacked < n {
		if time.Now().After(deadline) {
			t.Fatalf("the loop read %d of %d frames in 2 s", stacked, n)
		}
		k, err := unix.EpollWait(l.epfd, events[:], 100)
		if err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		for _, ev := range events[:k] {
			_, s, err := r.Read(int(ev.Fd), 4)
			stacked += s
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// TestPollHandsTheReadsToALoopAndBack: a TAP's frames reach the stack
// through the reader goroutines, then through a poll loop that took the
// reads (no reader goroutine left, writes still going out), then
// through the goroutines again once the reads are given back; the loop
// is told to stop waiting first. A close while the loop reads ends its
// reads.
func TestPollHandsTheReadsToALoopAndBack(t *testing.T) {
	ep, l := tapEndpoint(t, "tspoll")
	ps := openPacketSocket(t, l.Attrs().Index, l.Attrs().HardwareAddr)
	mac := net.HardwareAddr(ep.LinkAddress())

	if _, err := ep.Poll(); err == nil {
		t.Fatal("Poll before Attach succeeded")
	}
	d := &recordingDispatcher{}
	ep.Attach(d)
	ps.send(t, mac, 0, 5)
	waitFor(t, "5 frames through the reader goroutine", func() bool { return d.count() == 5 })

	before := runtime.NumGoroutine()
	r, err := ep.Poll()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ep.Poll(); err == nil {
		t.Fatal("a second Poll succeeded")
	}
	if !ep.Stats().Polled {
		t.Error("Stats().Polled is false while a loop reads")
	}
	// A goroutine of the runtime's or the test's may come and go
	// meanwhile: the count must settle where it was, the reader gone
	// and the goroutine that takes the loop's frames to the stack there.
	waitFor(t, fmt.Sprintf("%d goroutines while polled (the reader gone, the handoff there)", before), func() bool {
		return runtime.NumGoroutine() == before
	})
	loop := newPollLoop(t, r)
	ps.send(t, mac, 5, 25)
	if err := loop.run(t, r, 20); err != nil {
		t.Fatalf("the loop's reads: %v", err)
	}
	if err := ep.WriteFrame(0, [][]byte{
		append(append(append([]byte{}, l.Attrs().HardwareAddr...), mac...), 0x88, 0xb5, 0, 0, 0, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
	}); err != nil {
		t.Fatalf("a write while polled: %v", err)
	}
	if got := ps.recv(t); got != 99 {
		t.Fatalf("the kernel received frame %d, want 99", got)
	}

	ep.Unpoll()
	select {
	case fds := <-loop.removed:
		if len(fds) != 1 {
			t.Errorf("removed %v, want one descriptor", fds)
		}
	default:
		t.Fatal("Unpoll did not tell the loop to stop waiting")
	}
	if _, _, err := r.Read(0, 1); !errors.Is(err, link.ErrReleased) {
		t.Fatalf("Read after Unpoll: %v, want ErrReleased", err)
	}
	if ep.Stats().Polled {
		t.Error("Stats().Polled is true after Unpoll")
	}
	ps.send(t, mac, 25, 30)
	waitFor(t, "5 more frames through the reader goroutine", func() bool { return d.count() == 30 })
	d.checkOrder(t)

	r2, err := ep.Poll()
	if err != nil {
		t.Fatalf("Poll after Unpoll: %v", err)
	}
	loop2 := newPollLoop(t, r2)
	ep.Close()
	select {
	case <-loop2.removed:
	default:
		t.Fatal("Close did not tell the loop to stop waiting before it closed the descriptors")
	}
	if _, _, err := r2.Read(0, 1); !errors.Is(err, link.ErrReleased) {
		t.Fatalf("Read after Close: %v, want ErrReleased", err)
	}
	r2.Release()
	if len(loop2.removed) != 0 {
		t.Fatal("Release after Close told the loop again")
	}
}

// gatedDispatcher records the test's frames, as recordingDispatcher
// does, but holds the first one until gate is closed.
type gatedDispatcher struct {
	recordingDispatcher
	gate    chan struct{}
	holding chan struct{} // closed once the first frame is held
	once    sync.Once
}

func (d *gatedDispatcher) DeliverNetworkPacket(p tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if p == testEtherType {
		d.once.Do(func() {
			close(d.holding)
			<-d.gate
		})
	}
	d.recordingDispatcher.DeliverNetworkPacket(p, pkt)
}

// TestPollHandsFramesToTheStackInOrder: the frames a poll loop reads for
// the stack reach it on another goroutine (the loop reads on while the
// stack holds the first frame), in the order read; once the queue holds
// its limit, the loop delivers them itself after what waits (it waits
// for the stack then), still in order, and nothing is lost.
func TestPollHandsFramesToTheStackInOrder(t *testing.T) {
	defer func(v int) { *link.MaxHandoff = v }(*link.MaxHandoff)
	*link.MaxHandoff = 10 * 60 // ten of the test's frames
	ep, l := tapEndpoint(t, "tshand")
	ps := openPacketSocket(t, l.Attrs().Index, l.Attrs().HardwareAddr)
	mac := net.HardwareAddr(ep.LinkAddress())
	d := &gatedDispatcher{gate: make(chan struct{}), holding: make(chan struct{})}
	ep.Attach(d)
	r, err := ep.Poll()
	if err != nil {
		t.Fatal(err)
	}
	loop := newPollLoop(t, r)

	var gateOnce sync.Once
	openGate := func() { gateOnce.Do(func() { close(d.gate) }) }
	// A loop that ran the stack itself would wait for the gate: it
	// opens after 3 s, and the loop's 2 s deadline fails the test.
	safety := time.AfterFunc(3*time.Second, openGate)
	ps.send(t, mac, 0, 5)
	if err := loop.run(t, r, 5); err != nil {
		t.Fatalf("the loop's reads: %v", err)
	}
	safety.Stop()
	select {
	case <-d.holding:
	case <-time.After(2 * time.Second):
		t.Fatal("the stack did not get the first frame")
	}
	// The stack still holds frame 0: frames 5..29 fill the queue, and
	// the loop delivers the rest once the stack lets go.
	time.AfterFunc(200*time.Millisecond, openGate)
	ps.send(t, mac, 5, 30)
	if err := loop.run(t, r, 25); err != nil {
		t.Fatalf("the loop's reads: %v", err)
	}
	waitFor(t, "30 frames at the stack", func() bool { return d.count() == 30 })
	d.checkOrder(t)
	if s := ep.Stats(); s.RxDropped != 0 {
		t.Errorf("%d frames dropped", s.RxDropped)
	}
	r.Release()
}

// TestPollRefusesAnImpairedInbound: frames impaired on their way in go
// through the impairment's goroutines, which a poll loop cannot be.
func TestPollRefusesAnImpairedInbound(t *testing.T) {
	requireTUN(t)
	name := fmt.Sprintf("tspolli%d", time.Now().UnixNano()%100000)
	tap, err := link.OpenTAP(link.TAPConfig{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := link.ParseImpairSpec("in:loss=1%")
	if err != nil {
		t.Fatal(err)
	}
	imp := link.NewImpair(tap.Devices()[0], spec, link.ImpairOptions{Seed: 1})
	ep, err := link.New(link.Options{Devices: []link.Device{imp}})
	if err != nil {
		imp.Close()
		t.Fatal(err)
	}
	defer func() { ep.Close(); ep.Wait() }()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	ps := openPacketSocket(t, l.Attrs().Index, l.Attrs().HardwareAddr)
	d := &recordingDispatcher{}
	ep.Attach(d)
	if _, err := ep.Poll(); err == nil || !strings.Contains(err.Error(), "cannot be polled") {
		t.Fatalf("Poll of an impaired inbound: %v, want an error", err)
	}
	// Once the impairment is gone, the frames it holds go first, through
	// the goroutines: its pump ends with the next frame it reads.
	imp.Set(link.ImpairSpec{})
	mac := net.HardwareAddr(ep.LinkAddress())
	var r *link.Reads
	next := uint32(0)
	waitFor(t, "Poll once the impairment is gone", func() bool {
		ps.send(t, mac, next, next+1)
		next++
		r, err = ep.Poll()
		return err == nil
	})
	r.Release()
	if ep.Stats().Polled {
		t.Fatal("Stats().Polled after Release")
	}
}

// TestPollGivesTheReadsBackToAnImpairment: an inbound impairment set on
// a device a loop polls, with no Unpoll, takes the next frame the loop
// reads; the loop's Read gives the reads back to the goroutines
// (ErrReleased), which pass the frame on through the impairment.
func TestPollGivesTheReadsBackToAnImpairment(t *testing.T) {
	requireTUN(t)
	name := fmt.Sprintf("tspollg%d", time.Now().UnixNano()%100000)
	tap, err := link.OpenTAP(link.TAPConfig{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	imp := link.NewImpair(tap.Devices()[0], link.ImpairSpec{}, link.ImpairOptions{Seed: 1})
	ep, err := link.New(link.Options{Devices: []link.Device{imp}})
	if err != nil {
		imp.Close()
		t.Fatal(err)
	}
	defer func() { ep.Close(); ep.Wait() }()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	ps := openPacketSocket(t, l.Attrs().Index, l.Attrs().HardwareAddr)
	d := &recordingDispatcher{}
	ep.Attach(d)
	mac := net.HardwareAddr(ep.LinkAddress())
	r, err := ep.Poll()
	if err != nil {
		t.Fatal(err)
	}
	loop := newPollLoop(t, r)
	ps.send(t, mac, 0, 1)
	if err := loop.run(t, r, 1); err != nil {
		t.Fatalf("the loop's read: %v", err)
	}
	spec, err := link.ParseImpairSpec("in:delay=30ms")
	if err != nil {
		t.Fatal(err)
	}
	imp.Set(spec)
	start := time.Now()
	ps.send(t, mac, 1, 2)
	var events [4]unix.EpollEvent
	for err = nil; err == nil; {
		if time.Since(start) > 2*time.Second {
			t.Fatal("the loop kept the reads 2 s after the impairment came in")
		}
		k, werr := unix.EpollWait(loop.epfd, events[:], 100)
		if werr != nil && werr != unix.EINTR {
			t.Fatal(werr)
		}
		for _, ev := range events[:k] {
			if _, _, err = r.Read(int(ev.Fd), 4); err != nil {
				break
			}
		}
	}
	if !errors.Is(err, link.ErrReleased) {
		t.Fatalf("the loop's read after the impairment came in: %v, want %v", err, link.ErrReleased)
	}
	waitFor(t, "the frame through the impairment", func() bool { return d.count() == 2 })
	if took := time.Since(start); took < 30*time.Millisecond {
		t.Fatalf("the frame came in %v through a 30 ms delay", took)
	}
	if ep.Stats().Polled {
		t.Fatal("Stats().Polled after the impairment took the reads")
	}
	d.checkOrder(t)
}
