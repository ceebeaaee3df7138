package relay

// The flow engine relays the namespace's TCP connections without a TCP
// endpoint of the stack's own, the way pasta does: it maps each
// connection's sequence numbers and windows onto a host socket.
//
// Theory of operation. The link hands the engine every frame before the
// stack sees it (Divert). A SYN to a relayed destination opens a
// non-blocking host socket and starts its connect; the SYN-ACK goes to
// the namespace once the host connected, so a refused or unreachable
// destination is answered as the host saw it. Afterwards:
//
//   - namespace → host: a segment in order goes straight into the host
//     socket (send); what the socket took is acknowledged, the rest is
//     dropped and the window closed until the socket can take more (the
//     namespace then sends it again). A FIN becomes shutdown(SHUT_WR).
//   - host → namespace: the data stays in the host socket's receive
//     queue. The engine reads it with MSG_PEEK from the peek offset
//     (SO_PEEK_OFF: where the last segment sent ended), sends it as
//     segments within the namespace's window, and drops it from the
//     queue (MSG_TRUNC) once the namespace acknowledged it. A
//     retransmission rewinds the peek offset to what is unacknowledged
//     (on a timeout, or three duplicate acknowledgements). End of file
//     becomes a FIN after the data.
//
// Everything runs under one lock: segments on the link's reader
// goroutine, host sockets and timers on the engine's own loop (a
// goroutine waiting in Go's poller on one epoll set, edge-triggered on
// the host sockets; timers are the wait's deadline).
// Flows live in a flat table of pointer-free records indexed by their
// four-tuple; their timers (connect, retransmission, delayed ACK) live
// in one timer wheel (wheel.go). A flow is gone once both FINs are
// acknowledged, or at a reset: no TIME-WAIT here; the host's kernel
// keeps its own.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Engines a Gateway can relay TCP with (Config.Engine).
const (
	// EngineStack relays every connection through a TCP endpoint of the
	// stack and a goroutine-driven copy (the default).
	EngineStack = "stack"
	// EngineFlow relays TCP through the flow engine: no TCP endpoint per
	// connection, one loop for every host socket.
	EngineFlow = "flow"
)

// A Wire is where the flow engine writes its frames: the link the
// namespace is on (link.Endpoint).
type Wire interface {
	// WriteFrame writes one Ethernet frame, the concatenation of bufs,
	// on the queue hash picks.
	WriteFrame(hash uint32, bufs [][]byte) error
}

// Flow states.
const (
	stFree uint8 = iota
	stDialing
	stSynRcvd
	stEstablished
	stUDP // a UDP flow (engine_udp.go)
)

// Flow flags.
const (
	flFinRecv   uint16 = 1 << iota // the namespace's FIN is in (shutdown sent to the host)
	flFinSent                      // our FIN is sent (the host's end of file)
	flFinAcked                     // the namespace acknowledged our FIN
	flHostMore                     // the host socket may have data the window held back
	flBlocked                      // the host socket was full: data waits in the engine's queue for EPOLLOUT
	flFinQueued                    // the namespace's FIN waits behind the queue
	flHostEOF                      // the host socket signalled its end of file (or an error)
	flTiming                       // an RTT sample is running (rttSeq, rttStart)
	flUpload                       // counted in Gateway.uploads
	flFinMax                       // our FIN was sent once: sndMax counts it
	flSACK                         // the namespace permits SACK: our ACKs name what is held beyond a hole
)

// tcpFlow is one relayed connection: about 130 bytes, no pointers.
type tcpFlow struct {
	src, dst     [16]byte // the namespace's end; the far end as it named it
	sport, dport uint16
	v6           bool
	state        uint8
	nsWS, ourWS  int8 // window scales (-1: none; both or neither)
	nsMAC        [6]byte
	fd           int32
	gen          uint32
	idx          uint32 // its own index in the table
	flags        uint16
	mss          uint16 // of our segments to the namespace
	dupAcks      uint8
	retries      uint8  // TCP; UDP: the low byte of the wake-up at which the host socket was last readable
	copied       uint16 // bytes from sndUna on held in the engine's copy, not in the host socket
	copySlot     uint32 // 1 + the index of that copy in engine.copies (0: none)

	rcvNxt  uint32 // next sequence number from the namespace
	room    uint32 // the window we advertise: less what waits in the queue while the host socket is full
	unacked uint32 // bytes taken but not yet acknowledged
	iss     uint32
	sndUna  uint32 // oldest sequence number not acknowledged by the namespace
	sndNxt  uint32 // next sequence number to send
	sndMax  uint32 // the highest sndNxt so far (a retransmission rewinds sndNxt)
	sndWnd  uint32 // the namespace's window, scaled
	maxWnd  uint32 // the largest window the namespace advertised
	rttSeq  uint32

	rto, srtt, rttvar uint32 // ms, µs, µs
	rttStart          int64  // ns since the engine's base
	timerAt           int64  // tick of the earliest timer (0: none)
	queued            int64  // tick of the wheel entry filed for it (0: none)
	rtoAt, ackAt      int64  // ticks (0: off); rtoAt is the connect timeout while dialing

	up, down uint64 // bytes each way
	start    int64  // unix ns
	lastAt   int64  // UDP: tick of the last datagram either way
}

// flowKey finds a flow by the namespace's view of its four-tuple.
type flowKey struct {
	src, dst     [16]byte
	sport, dport uint16
	udp          bool
}

// Engine parameters.
const (
	engineWindow = 4 << 20 // the window advertised while the host socket takes data
	engineWS     = 7       // our window scale, when the namespace scales too
	minRTO       = 200     // ms
	initRTO      = 1000    // ms
	maxRTO       = 60000   // ms
	maxRetries   = 12      // retransmissions of one segment before a reset
	peekBufSize  = 256 << 10
	maxEvents    = 128
	maxSleep     = 5        // ms: the longest the loop waits while flows live
	idleCadence  = 2000     // ms: and for this long after the last one ended
	maxQueued    = 64 << 20 // bytes waiting for full host sockets, all flows together
	// smallCopy: data the host sent a flow with nothing in flight is
	// read (consumed) into a copy of the engine's, up to this much,
	// rather than peeked at: acknowledged, it is dropped without a
	// system call. A request/response exchange then costs one call
	// less.
	smallCopy = 2048
)

type engine struct {
	g      *Gateway
	wire   Wire
	mac    [6]byte
	verify bool
	mtu    int
	base   time.Time
	epfd   int
	epf    *os.File // owns epfd (blocking: not in Go's poller)
	evfd   int      // wakes the loop for Close

	mu      sync.Mutex
	flows   []tcpFlow                // protected by mu
	free    []uint32                 // free indexes of flows; protected by mu
	index   map[flowKey]uint32       // protected by mu
	dialing map[uint32]*dialSlot     // flows waiting for their connect; protected by mu
	wheel   wheel                    // protected by mu
	hdr     [maxHdrLen + 64]byte     // header scratch; protected by mu
	seg     segment                  // the segment divert parses; protected by mu
	buf     []byte                   // peek buffer; protected by mu
	iov     [3][]byte                // frame scratch; protected by mu
	sack    [maxSACKBlocks][2]uint32 // SACK block scratch; protected by mu
	udpHdr  [udpHdrLen]byte          // UDP header scratch; protected by mu
	ipID    uint32                   // IP identification of our fragments; protected by mu
	nic     tcpip.NICID              // the stack's NIC of the link
	sa4     unix.SockaddrInet4       // dial scratch; protected by mu
	sa6     unix.SockaddrInet6       // dial scratch; protected by mu
	closed  bool                     // protected by mu
	wakeups uint64                   // the loop's wake-ups; protected by mu
	last    uint32                   // the flow lookup found last; protected by mu
	now     int64                    // the time the work at hand began (clock); protected by mu
	fresh   bool                     // now is that of the work at hand; protected by mu
	ub      udpBatch                 // datagrams for one host socket; protected by mu
	// batching: the loop is reading a batch of frames, so datagrams
	// wait in ub until it ends. Protected by mu.
	batching bool
	live     int // flows not free; protected by mu
	events   [maxEvents]unix.EpollEvent

	poll  func() (LinkReads, error) // what ReadLink gave, for the loop; protected by mu
	reads LinkReads                 // the link the loop reads; the loop's own
	// engaged: the loop has a processor of its own and reads the link
	// (engage). Protected by mu; only the loop changes it.
	engaged  bool
	linkRead uint64 // bit i: queue i was readable at the last wake-up; the loop's own
	yield    bool   // the loop yields before it waits; the loop's own

	isn     *mrand.ChaCha8 // initial sequence numbers; protected by mu
	logging bool           // flow logs at debug level are on (Config.Log)
	idleAt  int64          // tick when the last flow ended; protected by mu
	// sleepUntil: the tick the loop's wait ends at the latest
	// (math.MaxInt64: none; 0 while it is awake). A timer filed for
	// more than maxSleep earlier wakes it (retime). Protected by mu.
	sleepUntil int64

	// queued holds what the namespace sent that a full host socket did
	// not take yet, per flow (block); queuedBytes counts it all.
	// Protected by mu.
	queued      map[uint32]flowQueue
	qFree       [][]byte // spare queue buffers (at most 2 × engineWindow bytes); protected by mu
	queuedBytes int      // with what held holds
	// held holds the namespace's segments that came after a hole, per
	// flow, in sequence order (hold). Protected by mu.
	held map[uint32][]heldSeg
	// copies are the flows' copies (tcpFlow.copied, copySlot), each of
	// smallCopy bytes; copyFree the indexes of the spare ones. Protected
	// by mu.
	copies   [][]byte
	copyFree []uint32

	wg sync.WaitGroup
}

// errNoPeekOff says the kernel lacks what the flow engine needs.
var errNoPeekOff = errors.New("relay: the flow engine needs SO_PEEK_OFF on TCP sockets (Linux 6.9 or later); use the stack engine")

// StartEngine starts the flow engine of a gateway made with Config.Engine
// EngineFlow: it writes to wire, as the link address mac, segments of at
// most mtu bytes of IP; verify says whether to check the checksums of
// the frames it takes (false where the link offloads them). It returns
// the function the link must call for every frame before the stack
// (link.Endpoint.SetDivert). Close stops the engine.
func (g *Gateway) StartEngine(wire Wire, mac [6]byte, mtu int, verify bool) (func(frame []byte) bool, error) {
	if g.cfg.Engine != EngineFlow {
		return nil, fmt.Errorf("relay: StartEngine on a gateway with the %q engine", g.cfg.Engine)
	}
	if g.st == nil {
		return nil, errors.New("relay: StartEngine before Install")
	}
	if err := probePeekOff(); err != nil {
		return nil, err
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("relay: epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("relay: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1, Pad: -1}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("relay: epoll_ctl: %w", err)
	}
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	e := &engine{
		isn:     mrand.NewChaCha8(seed),
		logging: g.cfg.Log != nil && g.cfg.Log.Enabled(context.Background(), slog.LevelDebug),
		g:       g, wire: wire, mac: mac, verify: verify, mtu: mtu, base: time.Now(),
		epfd: epfd, epf: os.NewFile(uintptr(epfd), "epoll"), evfd: evfd,
		// Sized for MaxFlows up front: growing by doubling left the old
		// arrays to the collector, a few MiB at 10 000 connections;
		// pages never used are never touched.
		flows:   make([]tcpFlow, 0, g.cfg.MaxFlows),
		index:   make(map[flowKey]uint32, g.cfg.MaxFlows),
		dialing: map[uint32]*dialSlot{},
		queued:  map[uint32]flowQueue{},
		held:    map[uint32][]heldSeg{},
		buf:     make([]byte, peekBufSize),
		idleAt:  -idleCadence, // it starts idle: no wait capped for flows that never were
	}
	g.mu.Lock()
	if g.closed || g.eng != nil {
		g.mu.Unlock()
		e.epf.Close()
		unix.Close(evfd)
		return nil, errors.New("relay: the gateway is closed or its engine started")
	}
	g.eng = e
	g.mu.Unlock()
	for _, n := range g.st.NICs() {
		if !n.Loopback {
			e.nic = n.ID
			break
		}
	}
	e.wg.Add(1)
	go e.loop()
	return e.divert, nil
}

// procMu serializes the engines' changes of GOMAXPROCS.
var procMu sync.Mutex

// addProc gives an engine's loop a processor of its own while it is
// engaged: the loop then waits without handing its processor over (loop).
func addProc() {
	procMu.Lock()
	defer procMu.Unlock()
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
}

// releaseProc takes back what addProc gave.
func releaseProc() {
	procMu.Lock()
	defer procMu.Unlock()
	if n := runtime.GOMAXPROCS(0); n > 1 {
		runtime.GOMAXPROCS(n - 1)
	}
}

// DefaultEngine is the engine a daemon relays with when none is named:
// EngineFlow where the kernel lets a TCP socket be peeked at an offset
// (SO_PEEK_OFF, Linux 6.9 and later), else EngineStack.
func DefaultEngine() string {
	if probePeekOff() == nil {
		return EngineFlow
	}
	return EngineStack
}

// probePeekOff checks that TCP sockets take SO_PEEK_OFF here.
func probePeekOff() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("relay: socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return fmt.Errorf("%w: %w", errNoPeekOff, err)
	}
	return nil
}

// engineWakeups is how often the flow engine's loop woke so far.
func (g *Gateway) engineWakeups() uint64 {
	e := g.engine()
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.wakeups
}

// engineEngaged is 1 while the flow engine is engaged (engage), else 0.
func (g *Gateway) engineEngaged() uint64 {
	e := g.engine()
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.engaged {
		return 1
	}
	return 0
}

// tick is the wheel tick of now (clock).
func (e *engine) tick() int64 { return e.clock() / wheelTick }

// clock is now, in ns since the engine's base: during a wake-up of the
// loop, or a frame a link's goroutine diverts, the time it began (stamp),
// so that its timers and RTT samples read the clock once. Callers hold mu.
func (e *engine) clock() int64 {
	if e.fresh {
		return e.now
	}
	return int64(time.Since(e.base))
}

// stamp reads the clock for the work that begins (see clock).
func (e *engine) stamp() {
	e.now = int64(time.Since(e.base))
	e.fresh = true
}

// close stops the loop, resets every flow and releases the engine's
// descriptors. Gateway.Close calls it. A flow whose namespace end had
// finished sending (its FIN is in the host socket: what Drain waits
// for) closes its host socket gracefully, so that the kernel still
// delivers what waits in the socket's send queue, then the FIN; any
// other is reset both ways.
func (e *engine) close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	e.mu.Unlock()
	e.wake()
	e.wg.Wait()
	e.mu.Lock()
	for i := range e.flows {
		f := &e.flows[i]
		if f.state != stFree {
			e.reset(f, uint32(i), f.flags&flFinRecv == 0 || f.flags&flFinQueued != 0)
		}
	}
	e.mu.Unlock()
	e.epf.Close()
	unix.Close(e.evfd)
}

// divert takes the namespace's TCP segments of relayed connections: a
// SYN to a destination the engine relays, and every segment of a flow it
// holds. Anything else goes on to the stack (false).
func (e *engine) divert(frame []byte) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.fresh { // not in the loop's wake-up: a frame of its own
		e.stamp()
		defer func() { e.fresh = false }()
	}
	s := &e.seg
	if e.closed || !parseSegment(frame, e.verify, s) {
		return false
	}
	defer func() { s.payload = nil }() // frame is the link's
	key := flowKey{src: s.src, dst: s.dst, sport: s.sport, dport: s.dport, udp: s.udp}
	if idx, ok := e.lookup(&key); ok {
		if s.udp {
			e.udpInput(&e.flows[idx], idx, s)
		} else {
			e.input(&e.flows[idx], idx, s)
		}
		return true
	}
	if s.udp {
		return e.openUDP(s, key)
	}
	if s.flags&(header.TCPFlagSyn|header.TCPFlagAck|header.TCPFlagRst) != header.TCPFlagSyn {
		return false // the stack's: a forward's connection, or none (it resets)
	}
	return e.open(s, key)
}

// lookup finds the flow of key: the one the last lookup found, when it
// is that one still (the next segment of an exchange or a stream), else
// through the index. Callers hold mu.
func (e *engine) lookup(key *flowKey) (uint32, bool) {
	if i := e.last; int(i) < len(e.flows) {
		f := &e.flows[i]
		if f.state != stFree && f.sport == key.sport && f.dport == key.dport &&
			(f.state == stUDP) == key.udp && f.src == key.src && f.dst == key.dst {
			return i, true
		}
	}
	idx, ok := e.index[*key]
	if ok {
		e.last = idx
	}
	return idx, ok
}

// addrOf is a flow address as a netip.Addr.
func addrOf(v6 bool, a [16]byte) netip.Addr {
	if v6 {
		return netip.AddrFrom16(a)
	}
	return netip.AddrFrom4([4]byte(a[:4]))
}

// open starts a flow for a SYN, or leaves the SYN to the stack (false)
// when the policy refuses its destination: the stack's relay answers
// refusals as it always has.
func (e *engine) open(s *segment, key flowKey) bool {
	g := e.g
	dst := addrOf(s.v6, s.dst)
	if g.st.IsLocal(dst) {
		return false
	}
	v := g.decide(netip.AddrPortFrom(dst, s.dport), g.st.IsLocal)
	if !v.ok || g.draining.Load() {
		return false
	}
	slot := g.dials.startBare(v.dial.Addr()) // evicted is asked in handle
	if slot == nil {
		g.stats.busy.Add(1)
		g.limitLog("dials", "dial slots full (%d, %d per address): dropping SYNs to %s (--max-pending-dials)", g.cfg.MaxPendingDials, g.cfg.MaxPendingPerDest, v.dial.Addr())
		return true // the namespace retries its SYN
	}
	if !tryAcquire(g.flows) {
		g.dials.end(slot, false)
		g.stats.busy.Add(1)
		g.limitLog("flows", "%d relayed flows: refusing new connections (--max-flows)", g.cfg.MaxFlows)
		e.answerSYN(s, unix.ECONNREFUSED)
		return true
	}
	fd, err := e.dial(v.dial)
	if err != nil && err != unix.EINPROGRESS {
		g.dials.end(slot, false)
		g.dialStats.record(0, err)
		g.stats.dialFail.Add(1)
		release(g.flows)
		e.answerSYN(s, err)
		return true
	}
	idx := e.alloc()
	f := &e.flows[idx]
	*f = tcpFlow{
		src: s.src, dst: s.dst, sport: s.sport, dport: s.dport, v6: s.v6,
		state: stDialing, nsMAC: s.srcMAC, fd: int32(fd), gen: f.gen + 1,
		nsWS: s.wscale, ourWS: -1,
		rcvNxt: s.seq + 1, rto: initRTO, start: time.Now().UnixNano(),
	}
	if s.wscale >= 0 {
		f.nsWS = min(s.wscale, 14)
		f.ourWS = engineWS
	}
	if s.sackOK {
		f.flags |= flSACK
	}
	f.idx = idx
	ourMSS := e.mtu - ip4HdrLen - tcpHdrLen
	if s.v6 {
		ourMSS = e.mtu - ip6HdrLen - tcpHdrLen
	}
	f.mss = uint16(min(int(s.mss), ourMSS, 65535))
	e.index[key] = idx
	e.dialing[idx] = slot
	e.born()
	// Registered once for all it will need, edge-triggered: EPOLLOUT
	// says the connect ended, and later that a full socket has room
	// again (the kernel signals it only after a short send); EPOLLIN
	// and EPOLLRDHUP that the host sent data or its end of file.
	ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(idx), Pad: int32(f.gen)}
	if err := unix.EpollCtl(e.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		e.dialFailed(f, idx, err)
		return true
	}
	now := e.tick()
	e.arm(f, idx, &f.rtoAt, now+int64(g.cfg.ConnectTimeout/time.Millisecond))
	e.wakeBy(now) // dials are checked for eviction every maxSleep
	return true
}

// wake interrupts the loop's wait, so that it computes its timeout anew.
func (e *engine) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(e.evfd, one[:])
}

// dial opens a non-blocking host socket and starts its connect to dst.
func (e *engine) dial(dst netip.AddrPort) (int, error) {
	family := unix.AF_INET
	if dst.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if src, ok := e.g.outboundFor(dst.Addr()); ok {
		if err := unix.Bind(fd, e.sockaddr(netip.AddrPortFrom(src, 0))); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	err = unix.Connect(fd, e.sockaddr(dst))
	if err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return -1, err
	}
	return fd, err
}

// sockaddr is a as a socket address, in the engine's own (no allocation);
// it is good until the next call.
func (e *engine) sockaddr(a netip.AddrPort) unix.Sockaddr {
	if a.Addr().Is4() {
		e.sa4 = unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}
		return &e.sa4
	}
	e.sa6 = unix.SockaddrInet6{Port: int(a.Port()), Addr: a.Addr().As16()}
	return &e.sa6
}

// alloc takes a free flow record.
func (e *engine) alloc() uint32 {
	if n := len(e.free); n > 0 {
		idx := e.free[n-1]
		e.free = e.free[:n-1]
		return idx
	}
	e.flows = append(e.flows, tcpFlow{})
	return uint32(len(e.flows) - 1)
}

// release closes flow idx's host socket and frees the flow.
func (e *engine) release(f *tcpFlow, idx uint32) {
	g := e.g
	if e.ub.n > 0 && e.ub.idx == idx {
		e.flushUDP()
	}
	delete(e.index, flowKey{src: f.src, dst: f.dst, sport: f.sport, dport: f.dport, udp: f.state == stUDP})
	if slot, ok := e.dialing[idx]; ok {
		delete(e.dialing, idx)
		g.dials.end(slot, false)
	}
	if f.state != stDialing {
		g.stats.active.Add(-1)
		if e.logging {
			g.logFlow("flow end", e.logRecord(f))
		}
	}
	if f.flags&flUpload != 0 {
		g.uploads.Add(-1)
	}
	unix.Close(int(f.fd))
	e.dropQueue(idx)
	e.dropHeld(idx)
	if f.copied > 0 {
		e.dropCopied(f, uint32(f.copied))
	}
	release(g.flows)
	gen := f.gen
	*f = tcpFlow{gen: gen}
	e.free = append(e.free, idx)
	if e.live--; e.live == 0 {
		e.idleAt = e.tick()
		e.qFree = nil // an idle engine keeps no spare memory
		e.ub.data = [linkBatch][]byte{}
	}
}

// logRecord is f as the flow log shows it.
func (e *engine) logRecord(f *tcpFlow) *flow {
	proto := "tcp"
	if f.state == stUDP {
		proto = "udp"
	}
	r := &flow{proto: proto, kind: "relay", total: &byteCounters{},
		ns:  netip.AddrPortFrom(addrOf(f.v6, f.src), f.sport),
		dst: netip.AddrPortFrom(addrOf(f.v6, f.dst), f.dport).String(), start: time.Unix(0, f.start)}
	r.up.Store(f.up)
	r.down.Store(f.down)
	if sa, err := unix.Getsockname(int(f.fd)); err == nil {
		r.local = sockaddrString(sa)
	}
	return r
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return ""
}

// arm sets one of f's timers (*which) to tick at, filing a wheel entry
// only when it is earlier than the one filed (lazy timers: a later
// deadline is found when the earlier entry fires).
func (e *engine) arm(f *tcpFlow, idx uint32, which *int64, at int64) {
	*which = at
	e.retime(f, idx)
}

// retime recomputes f's earliest timer.
func (e *engine) retime(f *tcpFlow, idx uint32) {
	t := int64(0)
	for _, at := range [2]int64{f.rtoAt, f.ackAt} {
		if at != 0 && (t == 0 || at < t) {
			t = at
		}
	}
	f.timerAt = t
	if t != 0 && (f.queued == 0 || t < f.queued) {
		e.wheel.add(t, idx, f.gen)
		f.queued = t
		e.wakeBy(t)
	}
}

// wakeBy makes sure that the loop wakes by tick at, or no more than
// maxSleep later: a loop that sleeps longer is woken, to compute its
// wait anew.
func (e *engine) wakeBy(at int64) {
	if at+maxSleep < e.sleepUntil {
		e.sleepUntil = 0
		e.wake()
	}
}

// LinkReads is a link whose frames the engine's loop reads itself
// (link.Reads): Watch adds its descriptors to the loop's set (and names
// what removes them, should the link take its reads back); Read(i, max)
// reads and hands on up to max frames of queue i (through the divert
// function to the engine, or to the stack: stacked counts those), and
// returns an error once the reads went back to the link's own
// goroutines.
type LinkReads interface {
	Watch(add func(fds []int) error, remove func(fds []int)) error
	Read(i, max int) (read, stacked int, err error)
	Release()
}

// ReadLink makes the flow engine's loop read the link's frames while it
// relays flows, saving the wake-up of a reader goroutine and a system
// call per frame: the loop calls poll for the reads when a relayed flow
// begins, and releases them once none has lived for idleCadence (see
// engage). poll's error (the link cannot be polled just now, e.g. while
// its inbound frames are impaired) leaves the reads to the link's
// goroutines until the next time.
func (g *Gateway) ReadLink(poll func() (LinkReads, error)) error {
	g.mu.Lock()
	e := g.eng
	g.mu.Unlock()
	if e == nil {
		return errors.New("relay: ReadLink before StartEngine")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.poll != nil {
		return errors.New("relay: ReadLink: the engine is closed or reads a link already")
	}
	e.poll = poll
	return nil
}

// born counts a new flow; the first one wakes a loop that is not
// engaged, so that it engages. Callers hold mu.
func (e *engine) born() {
	if e.live++; e.live == 1 && !e.engaged {
		e.wake()
	}
}

// engage gives the loop a processor of its own and the link's reads, as
// a relayed flow begins (the loop's goroutine, without mu); disengage
// takes both back once no flow has lived for idleCadence, so that an
// engine without flows costs the daemon's own sockets and forwards
// nothing. Engaged, the loop reads each frame itself and waits without
// handing its processor over (loop). Not engaged, the link's goroutines
// read, the stack runs on the daemon's processors alone, and every wait
// of the loop is one the scheduler knows of: a second processor for the
// stack made its exchanges cost 1.7 to 2.3 times the CPU (the runtime
// wakes a second thread for each goroutine the stack readies; see the
// performance log).
func (e *engine) engage() {
	addProc()
	e.mu.Lock()
	e.engaged = true
	poll := e.poll
	e.mu.Unlock()
	if poll == nil {
		return
	}
	r, err := poll()
	if err != nil {
		e.g.logf("relay: flow engine: the link's goroutines read it: %v", err)
		return
	}
	e.takeReads(r)
}

// disengage undoes engage (the loop's goroutine, without mu).
func (e *engine) disengage() {
	e.dropReads()
	e.mu.Lock()
	was := e.engaged
	e.engaged = false
	e.mu.Unlock()
	if was {
		releaseProc()
	}
}

// loop is the engine's goroutine: the link's frames (ReadLink), host
// socket events and timers. While it is engaged (relayed flows live:
// engage) it waits in epoll_wait on a thread of its own
// (runtime.GOMAXPROCS has one more processor for it then), without
// telling the scheduler: a wait the runtime knows of hands its
// processor over (a thread woken per wait), and a wait in Go's poller
// costs a second epoll_wait per wake-up and a goroutine switch per
// frame. Not engaged, every wait is one the scheduler knows of. It
// yields before it waits only when its work may have made goroutines
// ready (frames from a wire whose reader is a goroutine): what it leaves
// ready waits until another processor takes it. Frames it reads for
// the stack go to the link's goroutine (link.Reads), which runs the
// stack on another processor.
//
// Otherwise it does not yield while busy. The scheduler takes a
// goroutine it has not seen yield for 10 ms to be running all along and
// preempts it with a signal: the wait ends with EINTR and the loop goes
// on. That costs less than a yield every few ms, which wakes a spinning
// thread each time (measured: a loop that yielded every 8 ms spent up to
// 5 µs more CPU per exchange; see the performance log). Once nothing
// happened for restAfter, it waits as long as its timers allow in a
// wait the scheduler knows of: an idle daemon does not wake. (The
// scheduler takes the processor of such a wait after 10 ms, and its
// monitor then polls at a short interval for a while: a cost per quiet
// spell, which restAfter spares the short pauses between requests.)
//
// The goroutine is locked to its thread: preempted, it goes on where it
// was. Unlocked, each preemption moved it to whichever thread took it
// next, and exchanges through the engine took 15–19 % longer and 7–26 %
// more CPU (six interleaved runs; see the performance log).
func (e *engine) loop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer e.wg.Done()
	defer e.disengage() // whyever the loop ends, the link's goroutines read it
	timeout, now, busyAt := -1, int64(0), int64(0)
	for {
		quiet := !e.engaged || now-busyAt >= restAfter && (timeout < 0 || timeout > shortWait)
		if e.yield {
			// Unlocked for the yield: a locked goroutine that yields
			// hands its processor to another thread and sleeps until
			// that one hands it back; unlocked, the goroutines it
			// made ready run on this thread, and the loop goes on
			// after them.
			runtime.UnlockOSThread()
			runtime.Gosched()
			runtime.LockOSThread()
		}
		var n int
		var err error
		if quiet {
			n, err = unix.EpollWait(e.epfd, e.events[:], timeout)
		} else {
			// Until restAfter or the next timer; past restAfter, a
			// timer is due within shortWait (else quiet).
			t := restAfter - (now - busyAt)
			if t < 1 || timeout >= 0 && int64(timeout) < t {
				t = int64(timeout)
			}
			n, err = epollWait(e.epfd, e.events[:], int(t))
		}
		if err != nil && err != unix.EINTR {
			e.g.logf("relay: flow engine: epoll_wait: %v", err)
			return
		}
		if !e.handle(n) {
			return
		}
		timeout, now = e.nextTimeout()
		if n > 0 {
			busyAt = now
		}
	}
}

// The loop's cadence, in ms (see loop): it waits in a way the scheduler
// knows of once nothing happened for restAfter (a lone frame wakes it
// once or twice, not for long), and only for a timer more than
// shortWait away (a wait the scheduler knows of costs a thread's wake-up).
const (
	shortWait = 8
	restAfter = 50
)

// handle takes n events of the set and the timers due; false once the
// engine is closed. The link's frames are read without e.mu, which the
// divert function takes.
func (e *engine) handle(n int) bool {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return false
	}
	e.wakeups++
	e.sleepUntil = 0
	e.stamp()
	// Without a link to read, the frames come from another goroutine,
	// which what the engine writes may make ready: yield to it.
	e.yield = e.reads == nil && n > 0
	var link uint64 // bit i: queue i of the link is readable
	for i := 0; i < n; i++ {
		ev := &e.events[i]
		if ev.Fd < 0 {
			if ev.Fd <= linkEvent {
				link |= 1 << uint(linkEvent-ev.Fd)
				continue
			}
			var b [8]byte
			_, _ = unix.Read(e.evfd, b[:])
			continue
		}
		idx := uint32(ev.Fd)
		if int(idx) >= len(e.flows) {
			continue
		}
		f := &e.flows[idx]
		if f.gen != uint32(ev.Pad) || f.state == stFree {
			continue
		}
		e.hostEvent(f, idx, ev.Events)
	}
	e.wheel.advance(e.tick(), e.timer, e.keepTimer)
	if len(e.dialing) > 0 {
		for idx, slot := range e.dialing {
			if slot.evicted.Load() { // for another dial
				e.release(&e.flows[idx], idx) // the namespace retries its SYN
			}
		}
	}
	// Engaged while flows live, and for idleCadence after the last.
	engage := e.live > 0 || e.engaged && e.tick()-e.idleAt < idleCadence
	engaged := e.engaged
	e.mu.Unlock()
	if engage && !engaged {
		e.engage()
	} else if !engage && engaged {
		e.disengage()
	}
	// A queue readable twice in a row is read in batches (a read that
	// finds nothing ends one); else one frame, as a request is.
	was := e.linkRead
	e.linkRead = link
	if link&was != 0 && e.reads != nil { // a batch of frames: their datagrams wait for its end
		e.mu.Lock()
		e.batching = true
		e.mu.Unlock()
		defer e.endBatch()
	}
	for i := 0; link != 0; i++ {
		if link&(1<<uint(i)) == 0 {
			continue
		}
		link &^= 1 << uint(i)
		if e.reads == nil {
			break
		}
		max := 1
		if was&(1<<uint(i)) != 0 {
			max = linkBatch
		}
		// Frames for the stack go to the link's goroutine, which runs
		// the stack on a processor of its own: no yield for them.
		_, _, err := e.reads.Read(i, max)
		if err != nil {
			e.dropReads()
			break
		}
	}
	return true
}

// endBatch sends the datagrams the frames of a batch held back.
func (e *engine) endBatch() {
	e.mu.Lock()
	e.batching = false
	if e.ub.n > 0 {
		e.flushUDP()
	}
	e.mu.Unlock()
}

// linkEvent marks the link's queues in the epoll set: queue i is
// linkEvent-i (the eventfd is -1, host sockets their flow's index).
const linkEvent = -2

// linkBatch is the most frames the loop reads from a queue at once.
const linkBatch = 16

// takeReads adds r's descriptors to the set (the loop's goroutine).
func (e *engine) takeReads(r LinkReads) {
	remove := func(fds []int) {
		for _, fd := range fds {
			_ = unix.EpollCtl(e.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		}
	}
	add := func(fds []int) error {
		if len(fds) > 64 {
			return fmt.Errorf("%d link queues: the engine reads at most 64", len(fds))
		}
		for i, fd := range fds {
			ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(linkEvent - i), Pad: -1}
			if err := unix.EpollCtl(e.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
				remove(fds[:i])
				return fmt.Errorf("epoll_ctl: %w", err)
			}
		}
		return nil
	}
	if err := r.Watch(add, remove); err != nil {
		e.g.logf("relay: flow engine: the link's goroutines read it: %v", err)
		r.Release()
		return
	}
	e.reads = r
}

// dropReads gives the link's reads back (the loop's goroutine, or close
// once the loop is done); the link removes them from the set first.
func (e *engine) dropReads() {
	if e.reads != nil {
		e.reads.Release()
		e.reads = nil
	}
}

// nextTimeout is how long the loop may wait, in ms (-1: no limit), and
// the tick it was computed at.
func (e *engine) nextTimeout() (int, int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fresh = false // the wake-up ends
	timeout, now := -1, e.tick()
	if next := e.wheel.next(); next >= 0 {
		timeout = int(max(0, next-now))
	}
	// Timers armed by the link's goroutines (a delayed ACK, a
	// retransmission) wake the loop only when it sleeps more than
	// maxSleep past them (retime): while flows live and the link's
	// goroutines hand frames on, the loop sleeps no longer than
	// maxSleep, so that arming a timer costs no system call. A loop that
	// reads the link itself arms its own timers, and sleeps until the
	// next one. Dials in progress are checked for eviction every
	// maxSleep.
	capped := len(e.dialing) > 0 || e.reads == nil && (e.live > 0 || now-e.idleAt < idleCadence)
	if capped && (timeout < 0 || timeout > maxSleep) {
		timeout = maxSleep
	}
	if e.engaged && e.live == 0 { // it disengages at idleAt + idleCadence
		if t := int(max(0, e.idleAt+idleCadence-now)); timeout < 0 || t < timeout {
			timeout = t
		}
	}
	e.sleepUntil = math.MaxInt64
	if timeout >= 0 {
		e.sleepUntil = now + int64(timeout)
	}
	return timeout, now
}

// keepTimer says whether a wheel entry beyond the wheel's span is still
// the one that runs its flow's timers (see timer): not once the flow
// ended, its timers stopped, or an earlier entry took over.
func (e *engine) keepTimer(w wheelEntry) bool {
	f := &e.flows[w.idx]
	if f.gen != w.gen || f.state == stFree || f.queued != w.at {
		return false
	}
	if f.timerAt == 0 {
		f.queued = 0
		return false
	}
	return true
}

// timer handles a wheel entry.
func (e *engine) timer(w wheelEntry, tick int64) {
	f := &e.flows[w.idx]
	if f.gen != w.gen || f.state == stFree {
		return
	}
	if f.queued == tick {
		f.queued = 0
	}
	if f.timerAt == 0 {
		return
	}
	if f.timerAt > tick {
		if f.queued == 0 || f.timerAt < f.queued {
			e.wheel.add(f.timerAt, w.idx, f.gen)
			f.queued = f.timerAt
		}
		return
	}
	if f.state == stUDP {
		e.udpTimer(f, w.idx, tick)
		return
	}
	if f.ackAt != 0 && f.ackAt <= tick {
		f.ackAt = 0
		if f.unacked > 0 {
			e.sendAck(f)
		}
	}
	if f.rtoAt != 0 && f.rtoAt <= tick {
		f.rtoAt = 0
		if f.state == stDialing {
			e.dialFailed(f, w.idx, unix.ETIMEDOUT)
			return
		}
		if !e.timeout(f, w.idx) {
			return
		}
	}
	e.retime(f, w.idx)
}

// hostEvent handles epoll events of f's host socket.
func (e *engine) hostEvent(f *tcpFlow, idx uint32, events uint32) {
	if f.state == stUDP {
		e.udpEvent(f, idx, events)
		return
	}
	if f.state == stDialing {
		if e.connected(f, idx); f.state == stSynRcvd && events&(unix.EPOLLIN|unix.EPOLLRDHUP) != 0 {
			f.flags |= flHostMore // the host spoke first: sent after the handshake
			if events&unix.EPOLLRDHUP != 0 {
				f.flags |= flHostEOF
			}
		}
		return
	}
	if events&unix.EPOLLOUT != 0 && f.flags&flBlocked != 0 {
		e.unblock(f, idx)
	}
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		f.flags |= flHostEOF
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		if f.state == stSynRcvd {
			f.flags |= flHostMore // sent once the handshake is done
			return
		}
		e.pull(f, idx)
	}
}

// connected finishes a dial.
func (e *engine) connected(f *tcpFlow, idx uint32) {
	g := e.g
	soerr, err := unix.GetsockoptInt(int(f.fd), unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && soerr != 0 {
		err = syscall.Errno(soerr)
	}
	if err != nil {
		e.dialFailed(f, idx, err)
		return
	}
	slot := e.dialing[idx]
	delete(e.dialing, idx)
	g.dialStats.record(time.Since(slot.started), nil)
	g.dials.end(slot, true)
	if err := unix.SetsockoptInt(int(f.fd), unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		e.reset(f, idx, true)
		return
	}
	f.room = engineWindow
	g.stats.tcp.Add(1)
	g.stats.active.Add(1)
	g.uploads.Add(1)
	f.flags |= flUpload
	f.state = stSynRcvd
	f.iss = uint32(e.isn.Uint64())
	f.sndUna, f.sndNxt, f.sndMax = f.iss, f.iss+1, f.iss+1
	f.rtoAt = 0
	if e.logging {
		g.logFlow("flow start", e.logRecord(f))
	}
	e.sendSynAck(f)
	e.arm(f, idx, &f.rtoAt, e.tick()+int64(f.rto))
}

// dialFailed ends a dial that failed with err, answering the SYN as the
// host's kernel answered: a reset, an ICMP unreachable, or silence.
func (e *engine) dialFailed(f *tcpFlow, idx uint32, err error) {
	g := e.g
	slot := e.dialing[idx]
	delete(e.dialing, idx)
	g.dialStats.record(time.Since(slot.started), err)
	evicted := g.dials.end(slot, false)
	g.stats.dialFail.Add(1)
	var s segment
	s.v6, s.src, s.dst, s.sport, s.dport, s.srcMAC = f.v6, f.src, f.dst, f.sport, f.dport, f.nsMAC
	s.seq, s.flags = f.rcvNxt-1, header.TCPFlagSyn
	e.release(f, idx)
	if !evicted {
		e.answerSYN(&s, err)
	}
}

// answerSYN answers a SYN that will not be relayed, by why.
func (e *engine) answerSYN(s *segment, why error) {
	switch {
	case errors.Is(why, unix.ECONNREFUSED):
		f := tcpFlow{src: s.src, dst: s.dst, sport: s.sport, dport: s.dport, v6: s.v6, nsMAC: s.srcMAC, ourWS: -1}
		n := len(f.buildHeaders(e.hdr[:], e.mac, tcpOut{seq: 0, ack: s.seq + 1 + uint32(len(s.payload)), flags: header.TCPFlagRst | header.TCPFlagAck}, nil))
		e.write(&f, e.hdr[:n], nil)
	case errors.Is(why, unix.EHOSTUNREACH), errors.Is(why, unix.EHOSTDOWN):
		e.unreachable(s, unreachHost)
	case errors.Is(why, unix.ENETUNREACH):
		e.unreachable(s, unreachNet)
	}
	// Anything else (a timeout, or closing): silence; the namespace times out.
}

// unreachable sends the namespace an ICMP destination unreachable for
// s (why: network, host or port). It quotes the IP header of s and the
// first 8 bytes of its TCP or UDP header.
func (e *engine) unreachable(s *segment, why unreach) {
	var quote [ip6HdrLen + 8]byte
	var q []byte
	proto, l4Len := header.TCPProtocolNumber, tcpHdrLen
	if s.udp {
		proto, l4Len = header.UDPProtocolNumber, udpHdrLen+len(s.payload)
	}
	if s.v6 {
		q = quote[:ip6HdrLen+8]
		header.IPv6(q).Encode(&header.IPv6Fields{PayloadLength: uint16(l4Len), TransportProtocol: proto, HopLimit: 64,
			SrcAddr: tcpipAddr(s.src[:]), DstAddr: tcpipAddr(s.dst[:])})
	} else {
		q = quote[:ip4HdrLen+8]
		h := header.IPv4(q)
		h.Encode(&header.IPv4Fields{TotalLength: uint16(ip4HdrLen + l4Len), TTL: 64, Protocol: uint8(proto),
			SrcAddr: tcpipAddr(s.src[:4]), DstAddr: tcpipAddr(s.dst[:4])})
		h.SetChecksum(^h.CalculateChecksum())
	}
	t := q[len(q)-8:]
	binary.BigEndian.PutUint16(t[0:], s.sport)
	binary.BigEndian.PutUint16(t[2:], s.dport)
	if s.udp {
		binary.BigEndian.PutUint16(t[4:], uint16(l4Len))
	} else {
		binary.BigEndian.PutUint32(t[4:], s.seq)
	}
	ethType := header.IPv4ProtocolNumber
	if s.v6 {
		ethType = header.IPv6ProtocolNumber
	}
	pkt := unreachablePacket(addrOf(s.v6, s.dst), addrOf(s.v6, s.src), s.v6, q, why)
	eth := e.hdr[:ethHdrLen]
	copy(eth[0:6], s.srcMAC[:])
	copy(eth[6:12], e.mac[:])
	binary.BigEndian.PutUint16(eth[12:], uint16(ethType))
	f := tcpFlow{sport: s.sport}
	e.write(&f, eth, pkt)
}

// input handles a segment of flow f from the namespace.
func (e *engine) input(f *tcpFlow, idx uint32, s *segment) {
	if s.flags&header.TCPFlagRst != 0 {
		if f.state == stDialing || seqInWindow(s.seq, f.rcvNxt, engineWindow) {
			e.reset(f, idx, true) // the host sees a reset too
		}
		return
	}
	switch f.state {
	case stDialing:
		return // a SYN again: the dial goes on
	case stSynRcvd:
		if s.flags&header.TCPFlagAck == 0 {
			if s.flags&header.TCPFlagSyn != 0 && s.seq+1 == f.rcvNxt {
				e.sendSynAck(f) // ours was lost
			}
			return
		}
		if s.ack != f.iss+1 {
			e.sendRst(f, s.ack)
			return
		}
		f.state = stEstablished
		f.sndUna = s.ack
		f.sndWnd = uint32(s.wnd) << max(f.nsWS, 0)
		f.maxWnd = f.sndWnd
		f.rtoAt, f.retries = 0, 0
		e.retime(f, idx)
		if f.flags&flHostMore != 0 { // the host spoke first
			if e.pull(f, idx); f.state == stFree {
				return
			}
		}
	}
	if s.flags&header.TCPFlagSyn != 0 {
		e.sendAck(f) // a retransmitted SYN: ours is established
		return
	}
	if s.flags&header.TCPFlagAck != 0 && !e.ackInput(f, idx, s) {
		return
	}
	if len(s.payload) > 0 || s.flags&header.TCPFlagFin != 0 {
		e.dataInput(f, idx, s)
	}
}

// ackInput takes the namespace's acknowledgement and window; false if
// the flow ended.
func (e *engine) ackInput(f *tcpFlow, idx uint32, s *segment) bool {
	ack := s.ack
	wnd := uint32(s.wnd) << max(f.nsWS, 0)
	f.maxWnd = max(f.maxWnd, wnd)
	switch {
	case seqGT(ack, f.sndMax):
		e.sendAck(f) // acknowledges what was never sent
		return true
	case seqGT(ack, f.sndNxt):
		// What was sent before a retransmission rewound sndNxt
		// arrived after all: go on from there. (Dropping what it
		// acknowledges from the host socket moves the peek offset
		// back to 0, the new sndNxt.)
		f.sndNxt = ack
		if f.flags&flFinMax != 0 && ack == f.sndMax {
			f.flags |= flFinSent
		}
		fallthrough
	case seqGT(ack, f.sndUna):
		n := ack - f.sndUna
		if f.flags&flFinSent != 0 && ack == f.sndNxt {
			n--
			f.flags |= flFinAcked
		}
		if n > 0 {
			c := min(n, uint32(f.copied))
			if c > 0 {
				e.dropCopied(f, c)
			}
			if n > c {
				if _, err := recvDiscard(int(f.fd), int(n-c)); err != nil {
					e.reset(f, idx, true)
					return false
				}
			}
			f.down += uint64(n)
			e.g.bytes.down.Add(uint64(n))
		}
		f.sndUna = ack
		f.dupAcks, f.retries = 0, 0
		if f.flags&flTiming != 0 && !seqLT(ack, f.rttSeq) {
			f.flags &^= flTiming
			e.rttSample(f)
		}
		f.sndWnd = wnd
		if f.sndUna == f.sndNxt {
			f.rtoAt = 0
			e.retime(f, idx)
		} else {
			e.arm(f, idx, &f.rtoAt, e.tick()+int64(f.rto))
		}
		if f.flags&flFinAcked != 0 && f.flags&flFinRecv != 0 {
			e.finish(f, idx)
			return false
		}
		if f.flags&flHostMore != 0 {
			e.pull(f, idx)
		}
	case ack == f.sndUna:
		if wnd > f.sndWnd {
			reopened := f.sndWnd == 0 && f.retries > 0 && f.sndNxt != f.sndUna
			f.sndWnd = wnd
			if reopened {
				// The window opens again after a timeout found it
				// closed: what was in flight before it closed is
				// sent again at once rather than a backed-off
				// timeout later.
				e.retransmit(f, idx)
				return f.state != stFree
			}
			if f.flags&flHostMore != 0 {
				e.pull(f, idx)
			}
			return f.state != stFree
		}
		if len(s.payload) == 0 && s.flags&header.TCPFlagFin == 0 && f.sndNxt != f.sndUna && wnd == f.sndWnd {
			if f.dupAcks++; f.dupAcks == 3 {
				// Go back to the hole. (Resending the hole alone and
				// then one per partial acknowledgement, as NewReno
				// does, was slower under loss and reorder here and
				// stalled a flow of the soak: not yet.)
				e.retransmit(f, idx)
			}
		}
		f.sndWnd = wnd
	}
	return f.state != stFree
}

// rttSample updates the RTO from the sample that just ended (RFC 6298).
func (e *engine) rttSample(f *tcpFlow) {
	r := uint32(max(1, (e.clock()-f.rttStart)/1000)) // µs
	if f.srtt == 0 {
		f.srtt, f.rttvar = r, r/2
	} else {
		d := int64(f.srtt) - int64(r)
		if d < 0 {
			d = -d
		}
		f.rttvar = uint32((3*int64(f.rttvar) + d) / 4)
		f.srtt = uint32((7*int64(f.srtt) + int64(r)) / 8)
	}
	f.rto = min(max((f.srtt+4*f.rttvar)/1000, minRTO), maxRTO)
}

// dataInput passes the namespace's data and FIN to the host socket.
func (e *engine) dataInput(f *tcpFlow, idx uint32, s *segment) {
	if f.flags&flFinRecv != 0 {
		e.sendAck(f)
		return
	}
	seq, p := s.seq, s.payload
	fin := s.flags&header.TCPFlagFin != 0
	if seqLT(seq, f.rcvNxt) { // (partly) seen before
		skip := f.rcvNxt - seq
		if skip > uint32(len(p)) || (skip == uint32(len(p)) && !fin) {
			e.sendAck(f)
			return
		}
		p, seq = p[skip:], f.rcvNxt
	}
	if seq != f.rcvNxt {
		// A hole before it: keep it for when the hole is filled, and
		// say where the hole is (a duplicate ACK).
		e.hold(f, idx, seq, p, fin)
		e.sendAck(f)
		return
	}
	ok := e.accept(f, idx, p, fin)
	filled := false
	for ok && f.state != stFree {
		q, qfin, found := e.unhold(idx, f.rcvNxt)
		if !found {
			break
		}
		filled = true
		ok = e.accept(f, idx, q, qfin)
	}
	switch {
	case f.state == stFree || f.flags&flFinRecv != 0 && f.flags&flFinQueued == 0:
		return // ended, or the FIN was acknowledged
	case !ok || filled || f.flags&flBlocked != 0:
		e.sendAck(f)
		return
	}
	// The acknowledgement rides on the answer if one comes within a
	// tick; a second full segment is acknowledged at once.
	if f.unacked >= 2*uint32(f.mss) {
		e.sendAck(f)
		return
	}
	if f.ackAt == 0 {
		e.arm(f, idx, &f.ackAt, e.tick()+1)
	}
}

// accept takes p (and a FIN after it) at rcvNxt: into the host socket,
// or into the engine's queue while the socket is full. It returns false
// if the flow ended or not all could be taken (beyond the window).
func (e *engine) accept(f *tcpFlow, idx uint32, p []byte, fin bool) bool {
	if f.flags&flBlocked != 0 {
		// The host socket is full: what the window let in waits here,
		// acknowledged, so that no segment is dropped (the namespace
		// would send everything after it again).
		if len(p) > int(f.room) || !e.queue(idx, p) {
			return false // beyond the window: sent again
		}
		f.take(e, len(p))
		f.room -= uint32(len(p))
		if fin {
			f.rcvNxt++
			f.flags |= flFinRecv | flFinQueued
		}
		return true
	}
	if len(p) > 0 {
		n, err := sendNonblock(int(f.fd), p)
		if err != nil && err != unix.EAGAIN {
			e.reset(f, idx, true)
			return false
		}
		n = max(n, 0)
		if n < len(p) {
			// The socket took part: the rest waits in the queue,
			// and the window is what is left of it.
			e.block(f, idx)
			if !e.queue(idx, p[n:]) {
				f.take(e, n)
				f.room = 0
				return false
			}
			f.take(e, len(p))
			f.room = uint32(max(0, engineWindow-len(p[n:])))
			if fin {
				f.rcvNxt++
				f.flags |= flFinRecv | flFinQueued
			}
			return true
		}
		f.take(e, n)
	}
	if fin {
		e.finInput(f, idx)
		return false
	}
	return true
}

// heldSeg is a segment of the namespace's that came after a hole.
type heldSeg struct {
	seq  uint32
	fin  bool
	data []byte
}

// hold keeps a segment that came after a hole (within the window and
// the engine's bound on what it keeps), so that once the namespace
// sends the hole again the acknowledgement covers both and it need not
// send the rest: it has no selective acknowledgements from us.
func (e *engine) hold(f *tcpFlow, idx uint32, seq uint32, p []byte, fin bool) {
	if seq-f.rcvNxt+uint32(len(p)) > engineWindow || e.queuedBytes+len(p) > maxQueued {
		return
	}
	hs := e.held[idx]
	i := 0
	for i < len(hs) && seqLT(hs[i].seq, seq) {
		i++
	}
	if i < len(hs) && hs[i].seq == seq && len(hs[i].data) >= len(p) {
		return // had it
	}
	hs = slices.Insert(hs, i, heldSeg{seq: seq, fin: fin, data: slices.Clone(p)})
	e.held[idx] = hs
	e.queuedBytes += len(p)
}

// sackBlocks are the SACK blocks of what f holds beyond a hole (at
// most maxSACKBlocks, in sequence order), in e's scratch.
func (e *engine) sackBlocks(f *tcpFlow) [][2]uint32 {
	out := e.sack[:0]
	if len(e.held) == 0 {
		return out
	}
	hs := e.held[f.idx]
	for _, h := range hs {
		start, end := h.seq, h.seq+uint32(len(h.data))
		if h.fin {
			end++
		}
		if !seqGT(end, f.rcvNxt) || start == end {
			continue
		}
		if n := len(out); n > 0 && !seqGT(start, out[n-1][1]) {
			if seqGT(end, out[n-1][1]) {
				out[n-1][1] = end
			}
			continue
		}
		if len(out) == maxSACKBlocks {
			break
		}
		out = append(out, [2]uint32{start, end})
	}
	return out
}

// unhold returns what is held from rcvNxt on, if anything, and forgets
// what the flow has taken already.
func (e *engine) unhold(idx uint32, rcvNxt uint32) ([]byte, bool, bool) {
	if len(e.held) == 0 { // no flow holds anything: no lookup per segment
		return nil, false, false
	}
	hs := e.held[idx]
	for len(hs) > 0 {
		h := hs[0]
		end := h.seq + uint32(len(h.data))
		if seqGT(h.seq, rcvNxt) {
			break // a hole still
		}
		hs = hs[1:]
		e.queuedBytes -= len(h.data)
		if seqLT(end, rcvNxt) || end == rcvNxt && !h.fin {
			continue // taken already
		}
		if len(hs) == 0 {
			delete(e.held, idx)
		} else {
			e.held[idx] = hs
		}
		return h.data[rcvNxt-h.seq:], h.fin, true
	}
	if len(hs) == 0 {
		delete(e.held, idx)
	} else {
		e.held[idx] = hs
	}
	return nil, false, false
}

// dropHeld forgets flow idx's held segments.
func (e *engine) dropHeld(idx uint32) {
	for _, h := range e.held[idx] {
		e.queuedBytes -= len(h.data)
	}
	delete(e.held, idx)
}

// pull sends what the host socket holds beyond the peek offset, as far
// as the namespace's window allows, then the FIN at its end of file.
func (e *engine) pull(f *tcpFlow, idx uint32) {
	if f.state != stEstablished {
		return
	}
	for f.flags&flFinSent == 0 {
		avail := int64(f.sndWnd) - int64(f.sndNxt-f.sndUna)
		if avail <= 0 {
			f.flags |= flHostMore
			if f.rtoAt == 0 { // probe a closed window
				e.arm(f, idx, &f.rtoAt, e.tick()+int64(f.rto))
			}
			return
		}
		if held := uint32(f.copied); held > 0 && seqLT(f.sndNxt, f.sndUna+held) {
			// Sent again: what the engine holds comes first.
			off := f.sndNxt - f.sndUna
			m := min(int(held-off), int(avail))
			e.sendSegments(f, e.copies[f.copySlot-1][off:int(off)+m])
			if f.rtoAt == 0 {
				e.arm(f, idx, &f.rtoAt, e.tick()+int64(f.rto))
			}
			continue
		}
		want := int(min(avail, int64(len(e.buf))))
		consume := f.sndNxt == f.sndUna && f.copied == 0
		var n int
		var err error
		if consume {
			want = min(want, smallCopy)
			n, err = recvNonblock(int(f.fd), e.buf[:want])
		} else {
			n, err = recvPeek(int(f.fd), e.buf[:want])
		}
		switch {
		case err == unix.EAGAIN:
			f.flags &^= flHostMore
			return
		case err != nil:
			e.reset(f, idx, false) // a reset from the host: reset the namespace
			return
		case n == 0: // end of file: FIN after the data
			f.flags &^= flHostMore
			f.flags |= flFinSent
			e.send(f, header.TCPFlagFin|header.TCPFlagAck, f.sndNxt, nil)
			f.flags |= flFinMax
			f.forward(1)
			if f.rtoAt == 0 {
				e.arm(f, idx, &f.rtoAt, e.tick()+int64(f.rto))
			}
			return
		}
		if consume {
			e.keepCopy(f, e.buf[:n])
		}
		if f.flags&flTiming == 0 {
			f.flags |= flTiming
			f.rttSeq = f.sndNxt + uint32(n)
			f.rttStart = e.clock()
		}
		e.sendSegments(f, e.buf[:n])
		if f.rtoAt == 0 {
			e.arm(f, idx, &f.rtoAt, e.tick()+int64(f.rto))
		}
		if n < want && f.flags&flHostEOF == 0 {
			// All there is, unless the host's end of file came with
			// it (its edge is gone): then read on to the FIN.
			f.flags &^= flHostMore
			return
		}
	}
}

// sendSegments sends p to the namespace from sndNxt on, in segments of
// at most segSize, the last with PSH.
func (e *engine) sendSegments(f *tcpFlow, p []byte) {
	seg := f.segSize()
	for off := 0; off < len(p); {
		m := min(len(p)-off, seg)
		fl := header.TCPFlagAck
		if off+m == len(p) {
			fl |= header.TCPFlagPsh
		}
		e.send(f, fl, f.sndNxt, p[off:off+m])
		f.forward(uint32(m))
		off += m
	}
}

// keepCopy keeps p, just read from f's host socket at sndUna, in a copy
// of the engine's until the namespace acknowledges it.
func (e *engine) keepCopy(f *tcpFlow, p []byte) {
	var slot uint32
	if n := len(e.copyFree); n > 0 {
		slot, e.copyFree = e.copyFree[n-1], e.copyFree[:n-1]
	} else {
		slot = uint32(len(e.copies))
		e.copies = append(e.copies, make([]byte, smallCopy))
	}
	c := e.copies[slot]
	e.copies[slot] = c[:copy(c[:cap(c)], p)]
	f.copySlot = slot + 1
	f.copied = uint16(len(p))
}

// dropCopied forgets the first n bytes of f's copy (acknowledged, or
// the flow ended).
func (e *engine) dropCopied(f *tcpFlow, n uint32) {
	slot := f.copySlot - 1
	c := e.copies[slot]
	if int(n) < len(c) {
		e.copies[slot] = c[:copy(c, c[n:])]
		f.copied = uint16(len(c) - int(n))
		return
	}
	e.copies[slot] = c[:0]
	e.copyFree = append(e.copyFree, slot)
	f.copySlot, f.copied = 0, 0
}

// segSize is the largest segment to send the namespace: its MSS, but no
// more than half the largest window it advertised, as Linux bounds its
// own (tcp_bound_to_half_wnd). A receiver advertises no window while
// its free space is below the largest segment it saw: one 64 KiB
// segment lost before a small one, whose buffer it then holds out of
// order, would close a 64 KiB window until the hole is filled, and
// keep it closed against the segment that fills it.
func (f *tcpFlow) segSize() int {
	cut := f.maxWnd
	if cut > 536 {
		cut /= 2
	}
	if cut > 0 && cut < uint32(f.mss) {
		return max(int(cut), 68-tcpHdrLen)
	}
	return int(f.mss)
}

// timeout handles f's retransmission timer; false if the flow ended.
func (e *engine) timeout(f *tcpFlow, idx uint32) bool {
	outstanding := f.sndNxt != f.sndUna
	if !outstanding && f.flags&flHostMore == 0 {
		return true
	}
	if f.retries++; f.retries > maxRetries {
		e.reset(f, idx, true)
		return false
	}
	f.rto = min(2*f.rto, maxRTO)
	f.flags &^= flTiming // Karn: no sample from a retransmission
	if !outstanding || f.state == stEstablished && f.sndWnd == 0 {
		e.probe(f) // a closed window: the namespace answers with its window
		f.rtoAt = e.tick() + int64(f.rto)
		return true
	}
	e.retransmit(f, idx)
	f.rtoAt = e.tick() + int64(f.rto)
	return true
}

// retransmit sends again from the oldest unacknowledged byte.
func (e *engine) retransmit(f *tcpFlow, idx uint32) {
	if f.state == stSynRcvd {
		e.sendSynAck(f)
		return
	}
	f.sndNxt = f.sndUna
	f.flags &^= flFinSent | flTiming
	_ = unix.SetsockoptInt(int(f.fd), unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0)
	e.pull(f, idx)
}

// forward moves sndNxt on by n sequence numbers sent.
func (f *tcpFlow) forward(n uint32) {
	f.sndNxt += n
	if seqGT(f.sndNxt, f.sndMax) {
		f.sndMax = f.sndNxt
	}
}

// take counts n bytes of the namespace's as taken (into the host socket
// or the queue).
func (f *tcpFlow) take(e *engine, n int) {
	f.rcvNxt += uint32(n)
	f.unacked += uint32(n)
	f.up += uint64(n)
	e.g.bytes.up.Add(uint64(n))
}

// finInput takes the namespace's FIN once all before it is in the host
// socket: shutdown(SHUT_WR) passes it on.
func (e *engine) finInput(f *tcpFlow, idx uint32) {
	if f.flags&flFinQueued == 0 {
		f.rcvNxt++
		f.flags |= flFinRecv
	}
	f.flags &^= flFinQueued
	if f.flags&flUpload != 0 {
		f.flags &^= flUpload
		e.g.uploads.Add(-1)
	}
	_ = unix.Shutdown(int(f.fd), unix.SHUT_WR)
	e.sendAck(f)
	if f.flags&flFinAcked != 0 {
		e.finish(f, idx)
	}
}

// A flowQueue is what waits for a full host socket: q, a window of buf,
// taken from the front and added to at the back, moved to buf's start
// only when the back has no room. buf starts at minQueueBuf and doubles
// as needed, up to what the flow's window bounds the queue to
// (engineWindow): a flow holds what it queues, not a whole window.
type flowQueue struct {
	buf, q []byte
}

// maxSpareQueues bounds the queue buffers kept for reuse while flows
// live (none once the engine is idle).
const (
	maxSpareQueues = 2
	minQueueBuf    = 64 << 10
)

// queue keeps p for flow idx until its host socket has room; false if
// the engine holds maxQueued bytes already.
func (e *engine) queue(idx uint32, p []byte) bool {
	if e.queuedBytes+len(p) > maxQueued {
		return false
	}
	fq, ok := e.queued[idx]
	if !ok {
		if n := len(e.qFree); n > 0 {
			fq.buf, e.qFree = e.qFree[n-1], e.qFree[:n-1]
		} else {
			fq.buf = make([]byte, minQueueBuf)
		}
		fq.q = fq.buf[:0]
	}
	if cap(fq.q)-len(fq.q) < len(p) && cap(fq.q) < len(fq.buf) {
		fq.q = fq.buf[:copy(fq.buf, fq.q)] // to the start
	}
	if fq.q = append(fq.q, p...); cap(fq.q) > len(fq.buf) {
		fq.buf = fq.q[:cap(fq.q)] // grown: a new array, q at its start
	}
	e.queued[idx] = fq
	e.queuedBytes += len(p)
	return true
}

// block marks f's host socket full: the loop waits for EPOLLOUT, which
// the kernel signals once it has room again (a short send marked it
// full).
func (e *engine) block(f *tcpFlow, _ uint32) {
	if f.flags&flBlocked != 0 {
		return
	}
	f.flags |= flBlocked
}

// unblock moves what waits in f's queue into its host socket, as far as
// it goes; once the queue is empty the window opens again in full.
func (e *engine) unblock(f *tcpFlow, idx uint32) {
	fq := e.queued[idx]
	if q := fq.q; len(q) > 0 {
		n, err := sendNonblock(int(f.fd), q)
		if err != nil && err != unix.EAGAIN {
			e.reset(f, idx, true)
			return
		}
		n = max(n, 0)
		e.queuedBytes -= n
		if n < len(q) {
			fq.q = q[n:]
			e.queued[idx] = fq
			return // EPOLLOUT again once it has room
		}
	}
	e.dropQueue(idx)
	f.flags &^= flBlocked
	f.room = engineWindow
	if f.flags&flFinQueued != 0 {
		e.finInput(f, idx)
		return
	}
	e.sendAck(f) // the window opens again
}

// dropQueue forgets flow idx's queue.
func (e *engine) dropQueue(idx uint32) {
	if fq, ok := e.queued[idx]; ok {
		e.queuedBytes -= len(fq.q)
		delete(e.queued, idx)
		if len(e.qFree) < maxSpareQueues && len(fq.buf) <= 2*engineWindow {
			e.qFree = append(e.qFree, fq.buf)
		}
	}
}

// finish ends a flow whose FINs both ways are acknowledged.
func (e *engine) finish(f *tcpFlow, idx uint32) { e.release(f, idx) }

// reset ends a flow with a reset: of the host socket (rstHost; else it is
// gone already) and of the namespace's end.
func (e *engine) reset(f *tcpFlow, idx uint32, rstHost bool) {
	if f.state == stSynRcvd || f.state == stEstablished {
		e.send(f, header.TCPFlagRst|header.TCPFlagAck, f.sndNxt, nil)
	}
	if rstHost && f.state != stUDP {
		_ = unix.SetsockoptLinger(int(f.fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	e.release(f, idx)
}

func (e *engine) sendSynAck(f *tcpFlow) {
	n := len(f.buildHeaders(e.hdr[:], e.mac, tcpOut{seq: f.iss, ack: f.rcvNxt, flags: header.TCPFlagSyn | header.TCPFlagAck,
		wnd: 65535, mss: f.mss, wscale: f.ourWS, sackOK: f.flags&flSACK != 0}, nil))
	e.write(f, e.hdr[:n], nil)
}

func (e *engine) sendRst(f *tcpFlow, seq uint32) {
	n := len(f.buildHeaders(e.hdr[:], e.mac, tcpOut{seq: seq, flags: header.TCPFlagRst}, nil))
	e.write(f, e.hdr[:n], nil)
}

// probe asks the namespace for its window: a bare segment one before
// what it acknowledged, which it must answer (RFC 9293 3.8.6.1). One
// at sndNxt would not do: inside the window, a bare ACK is taken
// silently, and a window update the namespace sent and the wire lost
// or reordered behind an older zero window would never be repeated.
func (e *engine) probe(f *tcpFlow) {
	e.send(f, header.TCPFlagAck, f.sndUna-1, nil)
}

// sendAck sends a bare acknowledgement with the current window.
func (e *engine) sendAck(f *tcpFlow) {
	e.send(f, header.TCPFlagAck, f.sndNxt, nil)
}

// send sends one segment with the flow's acknowledgement and window; any
// pending delayed ACK rides on it.
func (e *engine) send(f *tcpFlow, flags header.TCPFlags, seq uint32, payload []byte) {
	wnd := f.room
	if f.ourWS >= 0 {
		wnd >>= uint(f.ourWS)
	}
	o := tcpOut{seq: seq, ack: f.rcvNxt, flags: flags, wnd: uint16(min(wnd, 65535))}
	if len(payload) == 0 && f.flags&flSACK != 0 {
		o.sack = e.sackBlocks(f)
	}
	n := len(f.buildHeaders(e.hdr[:], e.mac, o, payload))
	f.unacked = 0
	f.ackAt = 0 // retime finds it off when the entry fires
	e.write(f, e.hdr[:n], payload)
}

func (e *engine) write(f *tcpFlow, hdr, payload []byte) {
	e.iov[0] = hdr
	bufs := e.iov[:1]
	if len(payload) > 0 {
		e.iov[1] = payload
		bufs = e.iov[:2]
	}
	_ = e.wire.WriteFrame(uint32(f.sport), bufs)
	e.iov[0], e.iov[1] = nil, nil
}

// Sequence number comparisons, modulo 2³².
func seqLT(a, b uint32) bool { return int32(a-b) < 0 }
func seqGT(a, b uint32) bool { return int32(a-b) > 0 }

// seqInWindow reports whether seq is in [start, start+size).
func seqInWindow(seq, start, size uint32) bool { return seq-start < size }

// The host socket calls: non-blocking, so they go straight to the
// kernel without the scheduler's system call bookkeeping (see nbio).
func sendNonblock(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func recvPeek(fd int, b []byte) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_DONTWAIT|unix.MSG_PEEK, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// epollWait is epoll_wait without telling the scheduler (see loop).
func epollWait(epfd int, events []unix.EpollEvent, ms int) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(ms), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// recvDiscard drops n bytes from the head of a TCP socket's receive
// queue (MSG_TRUNC without a buffer).
func recvDiscard(fd int, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), 0, uintptr(n), unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}
