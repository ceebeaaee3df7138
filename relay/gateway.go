// Package relay gives a network namespace its network through a tapstack
// host, as slirp4netns and pasta do: TCP connections, UDP flows and pings
// from the namespace to other addresses end in the stack and are relayed
// over ordinary host sockets; a DNS forwarder answers at the stack's DNS
// addresses; port forwards carry host connections into the namespace.
//
// Start at New, Install (from stack.Config.Init) and Start.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/internal/gopool"
	"github.com/tapstack/tapstack/internal/nbio"
	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack"
)

// Config tunes a Gateway. The zero value of each field is its default.
type Config struct {
	// MaxFlows bounds relayed TCP connections plus UDP flows (4096).
	MaxFlows int
	// MaxPendingDials bounds host dials in progress (256). When all are
	// taken, a new dial may take the slot of one in progress (whose SYN
	// is dropped and retried by the namespace): see dialer. Black holes
	// cannot starve destinations that answer; when no slot can be taken,
	// the SYN is dropped and the namespace retries.
	MaxPendingDials int
	// MaxPendingPerDest bounds dials in progress to one address (32).
	MaxPendingPerDest int
	// MaxDNSQueries bounds DNS queries being forwarded at once (256);
	// more are dropped, and the namespace's resolver retries.
	MaxDNSQueries int
	// MaxPings bounds relayed pings waiting for their reply, each with a
	// host ICMP socket (64); more are dropped, as a ping lost on the way.
	MaxPings int
	// ConnectTimeout bounds a host dial (30 s).
	ConnectTimeout time.Duration
	// UDPIdleTimeout ends a UDP flow with no traffic either way (60 s).
	UDPIdleTimeout time.Duration

	// HostLoopback maps LoopbackAddrs (the stack's own addresses) to the
	// host's 127.0.0.1 and ::1 for ports no stack socket serves.
	HostLoopback  bool
	LoopbackAddrs []netip.Addr
	// AllowLinkLocal lets flows reach 169.254.0.0/16 and fe80::/10.
	AllowLinkLocal bool
	// Allow, if not empty, lists the only destinations allowed; Deny
	// lists refused ones (it wins over Allow).
	Allow, Deny []netip.Prefix

	// DNSAddrs are the stack addresses of the DNS forwarder (none: off).
	DNSAddrs []netip.Addr
	// ResolvConf is the file naming the upstream resolvers
	// (/etc/resolv.conf); it is read again when it changes.
	ResolvConf string

	// NoPing turns the ICMP echo relay off.
	NoPing bool

	// Forwards are the port forwards from the host into the namespace.
	Forwards []Forward
	// NSAddrs are the namespace's addresses, the targets of forwards.
	// The relay trusts its link to drop packets from other sources
	// (spoofed): see nshost.Config.FilterSources.
	NSAddrs []netip.Addr
	// AddGuest, if set, accepts another namespace address as the target
	// of a forward (Forward.NSAddr), or says why not. Without it forwards
	// go to NSAddrs only.
	AddGuest func(netip.Addr) error

	// OutboundAddrs are the host addresses relayed flows, pings and DNS
	// queries leave from (at most one per family; none: the kernel picks
	// by route), as slirp4netns's --outbound-addr. Flows to the host's
	// loopback leave from loopback whatever these say.
	OutboundAddrs []netip.Addr

	// Logf, if set, receives one line per notable event.
	Logf func(format string, args ...any)
	// Log, if set, takes the place of Logf: refusals and forwards at
	// debug level, limits reached as warnings, and each flow's start and
	// end at debug level with its five-tuple.
	Log *slog.Logger
}

func (c *Config) fill() {
	if c.MaxFlows <= 0 {
		c.MaxFlows = 4096
	}
	if c.MaxPendingDials <= 0 {
		c.MaxPendingDials = 256
	}
	if c.MaxPendingPerDest <= 0 {
		c.MaxPendingPerDest = 32
	}
	if c.MaxDNSQueries <= 0 {
		c.MaxDNSQueries = 256
	}
	if c.MaxPings <= 0 {
		c.MaxPings = 64
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 30 * time.Second
	}
	if c.UDPIdleTimeout <= 0 {
		c.UDPIdleTimeout = 60 * time.Second
	}
	if c.ResolvConf == "" {
		c.ResolvConf = "/etc/resolv.conf"
	}
}

// Stats are the gateway's counters.
type Stats struct {
	TCPRelayed, UDPRelayed, PingsRelayed uint64 // flows relayed
	ActiveFlows                          int64
	Refused                              uint64 // by policy
	DialFailures                         uint64 // host dials that failed
	DroppedBusy                          uint64 // flows dropped at a limit
	DNSQueries                           uint64
	Forwarded                            uint64 // port-forward connections and flows
	UDPErrors                            uint64 // host UDP errors passed on as ICMP
	PendingDials                         int    // host dials in progress
	DialsEvicted                         uint64 // dials dropped to give their slot to a less busy address
	DNSDropped                           uint64 // DNS queries dropped at MaxDNSQueries
	PingsDropped                         uint64 // pings dropped at MaxPings
	SYNsDropped                          uint64 // SYNs dropped at the forwarder's in-flight limit
	TableFull                            uint64 // flows refused because the socket table was full
}

// Gateway relays a namespace's flows. Its methods are safe for concurrent
// use.
type Gateway struct {
	cfg Config
	st  *stack.Stack
	// hw waits for the host sockets of relayed TCP connections; made by
	// Install.
	hw *hostWaiter

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// workers run the relays' handshakes (goPooled).
	workers *gopool.Pool

	flows    chan struct{} // semaphore of MaxFlows
	dnsq     chan struct{} // semaphore of MaxDNSQueries
	pings    chan struct{} // semaphore of MaxPings
	dials    *dialer
	fwdStats func() catchStats

	// uploads counts relayed TCP connections whose namespace → host
	// direction has not ended (see Drain).
	uploads  atomic.Int64
	draining atomic.Bool // Drain began: new flows are refused

	mu      sync.Mutex
	closers map[io.Closer]bool  // open relays and listeners; protected by mu
	fwds    map[string]*forward // port forwards by spec; protected by mu
	closed  bool                // protected by mu

	flowSet   flowSet      // flows in progress, for FlowList
	dialStats dialStats    // outcomes and latency of host TCP dials
	bytes     byteCounters // bytes relayed and forwarded, each way

	logs       logLimiter
	dnsTimeout time.Duration // of one upstream exchange (dnsTimeout)
	resolv     resolvers

	stats struct {
		tcp, udp, ping, refused, dialFail, busy, dns, forwarded atomic.Uint64
		udpErrors, dnsDropped, pingsDropped, tableFull          atomic.Uint64
		dnsAnswered, dnsFailed                                  atomic.Uint64
		active                                                  atomic.Int64
	}
}

// New returns a gateway; Install attaches it to a stack.
func New(cfg Config) *Gateway {
	cfg.fill()
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gateway{
		cfg: cfg, ctx: ctx, cancel: cancel,
		flows:   make(chan struct{}, cfg.MaxFlows),
		dnsq:    make(chan struct{}, cfg.MaxDNSQueries),
		pings:   make(chan struct{}, cfg.MaxPings),
		dials:   newDialer(cfg.MaxPendingDials, cfg.MaxPendingPerDest),
		closers: map[io.Closer]bool{},
		fwds:    map[string]*forward{},
		workers: gopool.New(gopool.Options{}),
	}
	g.resolv.path = cfg.ResolvConf
	g.dnsTimeout = dnsTimeout
	return g
}

func (g *Gateway) logf(format string, args ...any) {
	if g.cfg.Log != nil {
		if g.cfg.Log.Enabled(context.Background(), slog.LevelDebug) {
			g.cfg.Log.Debug(fmt.Sprintf(format, args...))
		}
		return
	}
	if g.cfg.Logf != nil {
		g.cfg.Logf(format, args...)
	}
}

// Install registers the relay's handlers on st. Call it from
// stack.Config.Init, before the first packet.
func (g *Gateway) Install(st *stack.Stack) error {
	hw, err := newHostWaiter()
	if err != nil {
		return err
	}
	g.hw = hw
	g.st = st
	g.fwdStats = catchTCP(st, forwarderInFlight(g.cfg.MaxPendingDials), g.handleTCP)
	catchUDP(st, g.handleUDP)
	if !g.cfg.NoPing {
		catchEcho(st, g.handleEcho)
	}
	return nil
}

// Start starts the DNS forwarder and the port forwards.
func (g *Gateway) Start() error {
	if g.st == nil {
		return errors.New("gateway: Start before Install")
	}
	for _, a := range g.cfg.DNSAddrs {
		if err := g.startDNS(a); err != nil {
			return err
		}
	}
	for _, f := range g.cfg.Forwards {
		if err := g.AddForward(f); err != nil {
			return err
		}
	}
	return nil
}

// Close stops every relay and listener and waits for their goroutines.
// It is idempotent.
func (g *Gateway) Close() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	cl := g.closers
	g.closers = map[io.Closer]bool{}
	g.mu.Unlock()
	g.cancel()
	for c := range cl {
		c.Close()
	}
	if g.hw != nil {
		// The relays still waiting for their (now closed) host sockets
		// end here.
		g.hw.Close()
	}
	g.wg.Wait()
	g.workers.Close()
}

// track registers c to be closed by Close; false if already closed (and
// c is closed then).
func (g *Gateway) track(cs ...io.Closer) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		g.closers[c] = true
	}
	return true
}

func (g *Gateway) untrack(cs ...io.Closer) {
	g.mu.Lock()
	for _, c := range cs {
		delete(g.closers, c)
	}
	g.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// goTracked runs f on a new goroutine that Close waits for.
func (g *Gateway) goTracked(f func()) bool { return g.spawn(f, false) }

// goPooled runs f on a goroutine of the gateway's pool, counted as one
// Close waits for. The pool's goroutines keep their stacks for the next
// function: a relay's dial and handshake grew a new goroutine's stack to
// 16 KiB, and those copies were 14 % of the daemon's CPU at 4 000
// connections a second. Only short work belongs there: a goroutine that
// parks (a relay's copy loops) would hold a grown stack while it waits.
func (g *Gateway) goPooled(f func()) bool { return g.spawn(f, true) }

func (g *Gateway) spawn(f func(), pooled bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	run := func() {
		defer g.wg.Done()
		f()
	}
	if pooled {
		return g.workers.Go(run)
	}
	go run()
	return true
}

// forwarderInFlight is the number of connection attempts the stack keeps
// open at once: the dials in progress and as many again for handshakes
// (a SYN beyond a dial limit ends its attempt at once).
func forwarderInFlight(maxDials int) int { return 2 * maxDials }

// Stats returns a snapshot of the counters.
func (g *Gateway) Stats() Stats {
	pending, evicted := g.dials.stats()
	var synDrops uint64
	if g.fwdStats != nil {
		synDrops = g.fwdStats().Dropped
	}
	return Stats{
PendingDials: pending, DialsEvicted: evicted,
		DNSDropped: g.stats.dnsDropped.Load(), PingsDropped: g.stats.pingsDropped.Load(), SYNsDropped: synDrops,
		TableFull:  g.stats.tableFull.Load(),
		TCPRelayed: g.stats.tcp.Load(), UDPRelayed: g.stats.udp.Load(), PingsRelayed: g.stats.ping.Load(),
		ActiveFlows: g.stats.active.Load(), Refused: g.stats.refused.Load(), DialFailures: g.stats.dialFail.Load(),
		DroppedBusy: g.stats.busy.Load(), DNSQueries: g.stats.dns.Load(), Forwarded: g.stats.forwarded.Load(),
		UDPErrors: g.stats.udpErrors.Load(),
	}
}

func tryAcquire(sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	default:
		return false
	}
}

func release(sem chan struct{}) { <-sem }

// timeWaitGrace bounds how long a finished relay waits for the
// namespace to acknowledge its FIN before it closes its side.
const timeWaitGrace = time.Second

// handleTCP runs on the goroutine the forwarder started for this SYN,
// a new one each time: the relay runs on one of the pool's, whose stack
// has grown already.
func (g *Gateway) handleTCP(r *tcpRequest) {
	if !g.goPooled(func() { g.relayTCP(r) }) {
		r.Refuse()
	}
}

func (g *Gateway) relayTCP(r *tcpRequest) {
	if g.draining.Load() {
		r.Refuse() // a host that is shutting down
		return
	}
	v := g.decide(r.ID.Dst, g.st.IsLocal)
	if !v.ok {
		g.refused("tcp", r.ID.Dst, v.reason)
		r.Refuse()
		return
	}
	slot := g.dials.start(g.ctx, v.dial.Addr())
	if slot == nil {
		g.stats.busy.Add(1)
		g.limitLog("dials", "dial slots full (%d, %d per address): dropping SYNs to %s (--max-pending-dials)", g.cfg.MaxPendingDials, g.cfg.MaxPendingPerDest, v.dial.Addr())
		r.Ignore() // the peer retries its SYN
		return
	}
	d := net.Dialer{Timeout: g.cfg.ConnectTimeout}
	if src, ok := g.outboundFor(v.dial.Addr()); ok {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	began := time.Now()
	hc, err := d.DialContext(slot.ctx, "tcp", v.dial.String())
	g.dialStats.record(time.Since(began), err)
	if g.dials.end(slot, err == nil) && err != nil {
		r.Ignore() // evicted for a less busy address: the peer retries
		return
	}
	if err != nil {
		g.stats.dialFail.Add(1)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			r.Refuse()
		case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
			r.Unreachable(false)
		case errors.Is(err, syscall.ENETUNREACH):
			r.Unreachable(true)
		default: // timed out, or we are closing: the peer times out too
			r.Ignore()
		}
		return
	}
	if !tryAcquire(g.flows) {
		g.stats.busy.Add(1)
		g.limitLog("flows", "%d relayed flows: refusing new connections (--max-flows)", g.cfg.MaxFlows)
		hc.Close()
		r.Refuse()
		return
	}
	s, err := r.Accept()
	if err != nil {
		// The namespace side is gone (reset during the handshake, or the
		// socket table is full): reset the host side too.
		g.tableFull(err)
		_ = hc.(*net.TCPConn).SetLinger(0)
		hc.Close()
		release(g.flows)
		return
	}
	g.stats.tcp.Add(1)
	sc := sockets.NewConn(s)
	if !g.track(sc, hc) {
		release(g.flows)
		return
	}
	g.stats.active.Add(1)
	g.uploads.Add(1)
	f := g.newFlow("tcp", "relay", r.ID.Src, v.dial.String(), hc.LocalAddr().String(), nil)
	// The splice runs on two fresh goroutines and this one ends: an idle
	// connection then holds two small stacks, not this goroutine's,
	// grown by the handshake and the dial.
	splice(sc, hc.(*net.TCPConn), f, g.hw, g.goTracked, func() { g.uploads.Add(-1) }, func() {
		g.endFlow(f)
		// A reused source port must find no TIME-WAIT here (see
		// sockets.Socket.CloseWithoutTimeWait).
		_ = sc.Socket().CloseWithoutTimeWait(timeWaitGrace)
		g.untrack(sc, hc)
		g.stats.active.Add(-1)
		release(g.flows)
	})
}

// tableFull counts and logs a flow refused because the stack's socket
// table is full (the namespace sees a RST, or silence for UDP).
func (g *Gateway) tableFull(err error) {
	if errors.Is(err, syscall.EMFILE) {
		g.stats.tableFull.Add(1)
		g.limitLog("sockets", "the socket table is full: refusing new flows (--max-sockets): %v", err)
	}
}

// handleUDP runs synchronously in the packet path: it must not block.
func (g *Gateway) handleUDP(r *udpRequest) bool {
	if g.draining.Load() {
		return false // ICMP port unreachable
	}
	v := g.decide(r.ID.Dst, g.st.IsLocal)
	if !v.ok {
		g.refused("udp", r.ID.Dst, v.reason)
		return false // ICMP port unreachable, as for a closed port
	}
	if !tryAcquire(g.flows) {
		g.stats.busy.Add(1)
		g.limitLog("flows", "%d relayed flows: dropping new UDP flows (--max-flows)", g.cfg.MaxFlows)
		return true // dropped
	}
	s, err := r.Accept()
	if err != nil {
		g.tableFull(err)
		release(g.flows)
		return true
	}
	if !g.goTracked(func() {
		defer release(g.flows)
		g.relayUDP(r, s, v.dial)
	}) {
		s.Close()
		release(g.flows)
	}
	return true
}

// unreachFor says which ICMP error the namespace gets for an error of a
// host UDP socket, if any (Linux reports ICMP errors on a connected
// socket's next call).
func unreachFor(err error) (unreach, bool) {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return unreachPort, true
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return unreachHost, true
	case errors.Is(err, syscall.ENETUNREACH):
		return unreachNet, true
	}
	return 0, false
}

// setRecvErr asks the kernel for every ICMP error about hc's datagrams.
func setRecvErr(hc *net.UDPConn, v6 bool) {
	rc, err := hc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		if v6 {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1)
		} else {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1)
		}
	})
}

// drainErrQueue empties hc's error queue (IP_RECVERR fills it with one
// entry per error; left there, they would eat its receive buffer).
func drainErrQueue(hc *net.UDPConn) {
	rc, err := hc.SyscallConn()
	if err != nil {
		return
	}
	var buf [512]byte
	var oob [512]byte
	_ = rc.Control(func(fd uintptr) {
		for i := 0; i < 64; i++ {
			if _, _, _, _, err := unix.Recvmsg(int(fd), buf[:], oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT); err != nil {
				return
			}
		}
	})
}

// relayUDP carries one UDP flow through a host socket with a random
// source port, until it idles out. Errors the host socket reports
// (port, host or network unreachable) reach the namespace as the ICMP
// errors Linux would send.
func (g *Gateway) relayUDP(r *udpRequest, s *sockets.Socket, dst netip.AddrPort) {
	var laddr *net.UDPAddr
	if src, ok := g.outboundFor(dst.Addr()); ok {
		laddr = &net.UDPAddr{IP: src.AsSlice()}
	}
	hc, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		g.stats.dialFail.Add(1)
		if why, ok := unreachFor(err); ok {
			_ = r.Unreachable(why)
		}
		s.Close()
		return
	}
	// With IP_RECVERR the host socket reports what Linux otherwise keeps
	// from a connected UDP socket, such as a failed ARP resolution (host
	// unreachable).
	setRecvErr(hc, dst.Addr().Is6())
	report := func(err error) bool {
		var errno syscall.Errno
		if !errors.As(err, &errno) {
			return false
		}
		drainErrQueue(hc)
		if why, ok := unreachFor(errno); ok {
			g.stats.udpErrors.Add(1)
			_ = r.Unreachable(why)
		}
		return true // an error of the flow, not of the socket: go on
	}
	g.stats.udp.Add(1)
	g.stats.active.Add(1)
	defer g.stats.active.Add(-1)
	pc := sockets.NewPacketConn(s)
	if !g.track(pc, hc) {
		return
	}
	defer g.untrack(pc, hc)
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	idle := g.cfg.UDPIdleTimeout
	f := g.newFlow("udp", "relay", r.ID.Src, dst.String(), hc.LocalAddr().String(), nil)
	defer g.endFlow(f)
	rc, err := hc.SyscallConn()
	if err != nil {
		return
	}
	host := newHostDatagrams(hc, rc)
	done := make(chan struct{}, 2)
	copyDatagrams := func(dst io.Writer, src deadlineReader, up bool) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 65535)
		// The read deadline moves on only every half of idle: a timeout
		// before the flow has been idle that long is looked at and
		// passed over below.
		var deadline time.Time
		for {
			if time.Until(deadline) < idle/2 {
				deadline = time.Now().Add(idle)
				_ = src.SetReadDeadline(deadline)
			}
			n, err := src.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < idle {
					continue // the other direction is busy
				}
				if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, net.ErrClosed) {
					return
				}
				if report(err) {
					continue // an ICMP error from the host side, passed on
				}
				return
			}
			last.Store(time.Now().UnixNano())
			if _, err := dst.Write(buf[:n]); err != nil {
				report(err)
			} else {
				f.moved(up, n)
			}
		}
	}
	go copyDatagrams(host, pc, true)
	go copyDatagrams(pc, host, false)
	<-done
	pc.Close()
	hc.Close()
	<-done
}

// deadlineReader is a socket read with a deadline.
type deadlineReader interface {
	io.Reader
	SetReadDeadline(time.Time) error
}

// hostDatagrams reads and writes a relayed flow's connected host UDP
// socket without entering Go's scheduler as a system call (nbio). Read
// and Write each run on one goroutine, with callbacks made once per flow
// (a closure per datagram was an allocation).
type hostDatagrams struct {
	*net.UDPConn
	rc syscall.RawConn

	rb, wb          []byte
	rn, wn          int
	rerr, werr      error
	readFn, writeFn func(uintptr) bool
}

func newHostDatagrams(hc *net.UDPConn, rc syscall.RawConn) *hostDatagrams {
	h := &hostDatagrams{UDPConn: hc, rc: rc}
	h.readFn = h.read
	h.writeFn = h.write
	return h
}

// read and write are the callbacks: false asks the poller to wait.
func (h *hostDatagrams) read(fd uintptr) bool {
	h.rn, h.rerr = nbio.Read(int(fd), h.rb)
	return h.rerr != unix.EAGAIN
}

func (h *hostDatagrams) write(fd uintptr) bool {
	h.wn, h.werr = nbio.Write(int(fd), h.wb)
	return h.werr != unix.EAGAIN
}

func (h *hostDatagrams) Read(b []byte) (int, error) {
	h.rb = b
	err := h.rc.Read(h.readFn)
	h.rb = nil
	return callResult(h.rn, err, h.rerr, "read")
}

func (h *hostDatagrams) Write(b []byte) (int, error) {
	h.wb = b
	err := h.rc.Write(h.writeFn)
	h.wb = nil
	return callResult(h.wn, err, h.werr, "write")
}

// callResult is a call's outcome: the poller's error (waitErr) first, then
// the system call's.
func callResult(n int, waitErr, callErr error, op string) (int, error) {
	if waitErr != nil {
		return 0, waitErr
	}
	if callErr != nil {
		return 0, os.NewSyscallError(op, callErr)
	}
	return n, nil
}

// Drain stops relaying new flows (a SYN gets a RST, a datagram of a new
// flow an ICMP port unreachable) and waits until every relayed TCP
// connection has passed on all that the namespace sent (its FIN is in
// the host socket, or it was reset), or until ctx ends. It returns how
// many connections were still sending then. Call it before Close, while
// the namespace still lives: its kernel holds what a command that exited
// had written and not yet sent.
func (g *Gateway) Drain(ctx context.Context) int64 {
	g.draining.Store(true)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		n := g.uploads.Load()
		if n <= 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return n
		case <-t.C:
		}
	}
}

// Flows counts the flows in progress.
func (g *Gateway) Flows() int64 { return g.stats.active.Load() }

// String describes the limits, for logs.
func (g *Gateway) String() string {
	return fmt.Sprintf("relay: max %d flows, %d pending dials (%d per address), %d DNS queries, %d pings, connect timeout %v, UDP idle %v",
		g.cfg.MaxFlows, g.cfg.MaxPendingDials, g.cfg.MaxPendingPerDest, g.cfg.MaxDNSQueries, g.cfg.MaxPings, g.cfg.ConnectTimeout, g.cfg.UDPIdleTimeout)
}

// outboundFor is the source address for a host socket towards dst, if
// Config.OutboundAddrs names one of its family and dst is not loopback.
func (g *Gateway) outboundFor(dst netip.Addr) (netip.Addr, bool) {
	dst = dst.Unmap()
	if dst.IsLoopback() {
		return netip.Addr{}, false
	}
	for _, a := range g.cfg.OutboundAddrs {
		if a.Is4() == dst.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}
