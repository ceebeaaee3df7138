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
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapstack/tapstack/internal/gopool"
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
	// MapToHost lists addresses that stand for the host itself (pasta's
	// --map-guest-addr and --map-host-loopback): flows to them are
	// relayed to the host's loopback of the same family.
	MapToHost []netip.Addr
	// Silent lists destinations whose flows are dropped without an
	// answer, as if nothing were there: slirp4netns's DNS address under
	// --disable-dns.
	Silent []netip.Addr

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
	// by route), as slirp4netns's --outbound-addr, flows to the host's
	// loopback included.
	OutboundAddrs []netip.Addr

	// NoDHCP turns off the DHCPv4 server (dhcp.go). It serves when
	// NSPrefixes has an IPv4 network and Gateway4 is set: leases from
	// network+15 on, Gateway4 as router and server, the IPv4 DNSAddrs,
	// MTU; each leased address is let through AddGuest.
	NoDHCP bool
	// NoRA turns off the router advertisements (ra.go) of NSPrefixes'
	// IPv6 networks, with the IPv6 DNSAddrs and MTU. Each address the
	// namespace claims in them (duplicate address detection) is let
	// through AddGuest.
	NoRA bool
	// NoSLAAC advertises the networks without the autonomous flag: for a
	// namespace that has its addresses already (configured by the
	// daemon), where SLAAC would add another that Linux then prefers as
	// the source of new connections (the newest address wins its ties).
	NoSLAAC bool
	// NSPrefixes are the namespace's addresses with their networks'
	// lengths: the networks DHCP leases from and RAs announce.
	NSPrefixes []netip.Prefix
	// Gateway4 is the stack's address that the namespace routes IPv4
	// through: the DHCP server's address and the router it names.
	Gateway4 netip.Addr
	// MTU is the link's MTU, which DHCP and RAs advertise (0: they do
	// not).
	MTU int

	// Engine is how TCP and UDP are relayed: EngineStack ("stack", the
	// default here), or EngineFlow ("flow": the flow engine, engine.go,
	// started with Gateway.StartEngine once the link is up; a daemon's
	// default where the kernel has what it needs: DefaultEngine).
	Engine string

	// Logf, if set, receives one line per notable event.
	Logf func(format string, args ...any)
	// Log, if set, takes the place of Logf: refusals and forwards at
	// debug level, limits reached as warnings, and each flow's start and
	// end at debug level with its five-tuple.
	Log *slog.Logger
}

// Defaults of Config's fields.
const (
	DefaultMaxFlows          = 4096
	DefaultMaxPendingDials   = 256
	DefaultMaxPendingPerDest = 32
	DefaultMaxDNSQueries     = 256
	DefaultMaxPings          = 64
	DefaultConnectTimeout    = 30 * time.Second
	DefaultUDPIdleTimeout    = 60 * time.Second
	DefaultResolvConf        = "/etc/resolv.conf"
)

func (c *Config) fill() {
	for _, n := range []struct {
		v   *int
		def int
	}{{&c.MaxFlows, DefaultMaxFlows}, {&c.MaxPendingDials, DefaultMaxPendingDials}, {&c.MaxPendingPerDest, DefaultMaxPendingPerDest},
		{&c.MaxDNSQueries, DefaultMaxDNSQueries}, {&c.MaxPings, DefaultMaxPings}} {
		if *n.v <= 0 {
			*n.v = n.def
		}
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&c.ConnectTimeout, DefaultConnectTimeout}, {&c.UDPIdleTimeout, DefaultUDPIdleTimeout}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if c.Engine == "" {
		c.Engine = EngineStack
	}
	if c.ResolvConf == "" {
		c.ResolvConf = DefaultResolvConf
	}
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
	auto    autoFwd             // forwards that follow the namespace's ports; protected by mu
	closed  bool                // protected by mu

	flowSet   flowSet      // flows in progress, for FlowList
	dialStats dialStats    // outcomes and latency of host TCP dials
	bytes     byteCounters // bytes relayed and forwarded, each way

	eng *engine // the flow engine (Config.Engine); protected by mu

	dhcp *dhcpServer // nil: off
	ra   *raServer   // nil: off

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
	g.dhcp = newDHCPServer(&g.cfg, st.IsLocal, g.logf)
	if g.dhcp != nil {
		catchUDPWith(st, g.handleUDP, g.dhcp.handle)
	} else {
		catchUDP(st, g.handleUDP)
	}
	if g.ra = newRAServer(&g.cfg, g.logf); g.ra != nil {
		g.ra.st = st
		if err := catchNDP(st, g.ra.handle); err != nil {
			return err
		}
	}
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
	if g.ra != nil {
		g.goTracked(func() { g.ra.run(g.ctx.Done()) })
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
	g.mu.Lock()
	eng := g.eng
	g.mu.Unlock()
	if eng != nil {
		eng.close()
	}
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

func tryAcquire(sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	default:
		return false
	}
}

func release(sem chan struct{}) { <-sem }

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
	return fmt.Sprintf("relay: %s engine, max %d flows, %d pending dials (%d per address), %d DNS queries, %d pings, connect timeout %v, UDP idle %v",
		g.cfg.Engine, g.cfg.MaxFlows, g.cfg.MaxPendingDials, g.cfg.MaxPendingPerDest, g.cfg.MaxDNSQueries, g.cfg.MaxPings, g.cfg.ConnectTimeout, g.cfg.UDPIdleTimeout)
}

// outboundFor is the source address for a host socket towards dst, if
// Config.OutboundAddrs names one of its family; towards the host's
// loopback too, as slirp4netns binds it (the host's server sees the
// outbound address).
func (g *Gateway) outboundFor(dst netip.Addr) (netip.Addr, bool) {
	dst = dst.Unmap()
	for _, a := range g.cfg.OutboundAddrs {
		if a.Is4() == dst.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// OutboundAddr resolves what a user names as an outbound address
// (Config.OutboundAddrs): an address of the family (v4 or not), or an
// interface whose first such address is taken (for IPv6 a global one).
// The host must have it: a socket is bound to it.
func OutboundAddr(val string, v4 bool) (netip.Addr, error) {
	family := "IPv6"
	if v4 {
		family = "IPv4"
	}
	a, err := netip.ParseAddr(val)
	if err != nil {
		ifi, ierr := net.InterfaceByName(val)
		if ierr != nil {
			return netip.Addr{}, fmt.Errorf("neither an %s address nor an interface: %w", family, ierr)
		}
		addrs, _ := ifi.Addrs()
		for _, ia := range addrs {
			p, perr := netip.ParsePrefix(ia.String())
			if perr == nil && p.Addr().Is4() == v4 && (v4 || p.Addr().IsGlobalUnicast()) {
				a = p.Addr()
				break
			}
		}
		if !a.IsValid() {
			return netip.Addr{}, fmt.Errorf("interface %s has no %s address", val, family)
		}
	}
	a = a.Unmap()
	if a.Is4() != v4 || a.IsUnspecified() || a.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("want a unicast %s address or an interface name", family)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: a.AsSlice()})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("not usable as a source on this host: %w", err)
	}
	c.Close()
	return a, nil
}
