// Package stack owns one gVisor network stack: its NICs (a loopback and one
// per link), addresses, routes, ARP/NDP, ICMP, protocol options, counters,
// and an orderly shutdown.
//
// Start at New and Config. A link is any gVisor stack.LinkEndpoint (package
// link builds them over a TAP or an in-memory cable); this package knows
// nothing of TAP devices, sockets, namespaces or the command line.
package stack

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/loopback"
	"gvisor.dev/gvisor/pkg/tcpip/link/qdisc/fifo"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// DefaultMaxSockets is the socket table capacity when Config.MaxSockets is 0.
const DefaultMaxSockets = 1024

// LoopbackNIC is the NIC ID of the loopback device; links are numbered
// from 2 in the order of Config.Links.
const LoopbackNIC tcpip.NICID = 1

// Config describes a stack. The zero value is a stack with only loopback.
type Config struct {
	// Links are the NICs besides loopback.
	Links []LinkConfig

	// MaxSockets is the capacity of the socket table that package sockets
	// keeps for this stack. Zero means DefaultMaxSockets.
	MaxSockets int

	// SocketSites makes package sockets record where each socket was made
	// (the first caller outside package sockets, and a short stack), for
	// sockets.Table and for the EMFILE error of a full table, which then
	// names the places that hold the most sockets. It costs a stack walk
	// per socket.
	SocketSites bool

	// Init, if set, runs once the protocols are set up and before any NIC
	// exists: the place to install protocol handlers (such as the relay's
	// forwarders) that must be in place before the first packet.
	Init func(*Stack) error
}

// LinkConfig describes one NIC.
type LinkConfig struct {
	// Name is the NIC's name, used for IPv6 scope IDs and listings.
	// Empty means "ethN" where N is its position in Config.Links.
	Name string

	// Endpoint is the wire. The stack owns it from New on and closes it on
	// Close.
	Endpoint gvstack.LinkEndpoint

	// Addrs are the static addresses with their prefix lengths; each one
	// also installs the route to its subnet through this NIC.
	Addrs []netip.Prefix

	// Gateway4 and Gateway6, when valid, install default routes through
	// this NIC.
	Gateway4, Gateway6 netip.Addr

	// NoLinkLocal leaves out the IPv6 link-local address (fe80::/64,
	// EUI-64 from the NIC's MAC) that every Ethernet NIC otherwise gets.
	NoLinkLocal bool

	// Gateway makes the NIC accept packets for any destination
	// (promiscuous) and send from any source (spoofing), so that flows
	// to other hosts end in this stack and can be relayed.
	Gateway bool

	// TxQueues, when above 0, puts a FIFO queueing discipline with that
	// many queues (at most MaxTxQueues) between the stack and Endpoint:
	// a sender enqueues its packet and returns, and one goroutine per
	// queue writes batches to the link. Senders then never wait for the
	// link while they hold a connection's lock (gVisor sends a SYN-ACK
	// with the new connection locked, and its TCP processors spin on
	// such a lock). 0 writes from the sending goroutine.
	TxQueues int
}

// MaxTxQueues bounds LinkConfig.TxQueues.
const MaxTxQueues = 64

// txQueueLen is the capacity of each transmit queue, in packets; a
// packet that finds its queue full is dropped (and TCP sends it again).
const txQueueLen = 1000

// Stack is one gVisor stack. Its methods are safe for concurrent use.
type Stack struct {
	gv         *gvstack.Stack
	maxSockets int
	sites      bool // Config.SocketSites
	nics       []NIC

	mu         sync.Mutex
	closed     bool        // protected by mu
	closeHooks []func()    // protected by mu
	values     map[any]any // protected by mu; see Value
	done       chan struct{}
}

// Value returns the value the layers above keep on this stack under key,
// made by mk on the first call (mk runs with the stack's lock held: it
// must not call back into the stack). Per-stack state of the socket
// layer (its socket table, its resolver settings) lives here, so that it
// dies with the stack. Keys should be values of an unexported type.
func (s *Stack) Value(key any, mk func() any) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.values[key]; ok {
		return v
	}
	if s.values == nil {
		s.values = make(map[any]any)
	}
	v := mk()
	s.values[key] = v
	return v
}

// NIC describes one NIC of a stack.
type NIC struct {
	ID       tcpip.NICID
	Name     string
	Loopback bool
	Addrs    []netip.Prefix
	endpoint gvstack.LinkEndpoint
	txQueues int
}

// New builds a stack with IPv4, IPv6, ARP, ICMPv4/v6, TCP (SACK on) and
// UDP, a loopback NIC with 127.0.0.1/8 and ::1/128, and one NIC per link.
// On error everything built so far, links included, is closed.
func New(cfg Config) (*Stack, error) {
	s, err := build(cfg)
	if err != nil {
		for _, l := range cfg.Links {
			if l.Endpoint != nil {
				l.Endpoint.Close()
			}
		}
		if s != nil {
			s.gv.Close()
			s.gv.Wait()
		}
		return nil, err
	}
	return s, nil
}

func build(cfg Config) (*Stack, error) {
	if cfg.MaxSockets < 0 {
		return nil, fmt.Errorf("stack: MaxSockets %d is negative", cfg.MaxSockets)
	}
	// A gateway NIC is promiscuous; gVisor's HandleLocal would then take
	// every source address for its own and drop the packet, so a stack
	// with a gateway NIC sends traffic between its own non-loopback
	// addresses out of the NIC instead.
	handleLocal := true
	for _, l := range cfg.Links {
		if l.Gateway {
			handleLocal = false
		}
	}
	gv := gvstack.New(gvstack.Options{
		NetworkProtocols:   []gvstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocolWithOptions(ipv6.Options{DADConfigs: gvstack.DADConfigurations{DupAddrDetectTransmits: 0}}), arp.NewProtocol},
		TransportProtocols: []gvstack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        handleLocal,
	})
	s := &Stack{gv: gv, maxSockets: cfg.MaxSockets, sites: cfg.SocketSites, done: make(chan struct{})}
	if s.maxSockets == 0 {
		s.maxSockets = DefaultMaxSockets
	}
	sack := tcpip.TCPSACKEnabled(true)
	if err := gv.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return s, fmt.Errorf("stack: enable SACK: %s", err)
	}
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	if err := gv.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate); err != nil {
		return s, fmt.Errorf("stack: enable receive buffer moderation: %s", err)
	}

	if cfg.Init != nil {
		if err := cfg.Init(s); err != nil {
			return s, err
		}
	}

	lo := NIC{ID: LoopbackNIC, Name: "lo", Loopback: true, endpoint: loopback.New(),
		Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}}
	if err := s.addNIC(lo); err != nil {
		return s, err
	}
	var routes []tcpip.Route
	routes = append(routes, subnetRoutes(lo)...)

	names := map[string]bool{"lo": true}
	bcast := false
	for i, l := range cfg.Links {
		if l.Endpoint == nil {
			return s, fmt.Errorf("stack: link %d has no endpoint", i)
		}
		name := l.Name
		if name == "" {
			name = fmt.Sprintf("eth%d", i)
		}
		if names[name] {
			return s, fmt.Errorf("stack: two NICs named %q", name)
		}
		names[name] = true
		if l.TxQueues < 0 || l.TxQueues > MaxTxQueues {
			return s, fmt.Errorf("stack: NIC %s: TxQueues %d is outside 0..%d", name, l.TxQueues, MaxTxQueues)
		}
		n := NIC{ID: tcpip.NICID(i + 2), Name: name, endpoint: l.Endpoint, txQueues: l.TxQueues}
		for _, p := range l.Addrs {
			if !p.IsValid() {
				return s, fmt.Errorf("stack: NIC %s: invalid address", name)
			}
			n.Addrs = append(n.Addrs, p)
		}
		mac := l.Endpoint.LinkAddress()
		if !l.NoLinkLocal && len(mac) == header.EthernetAddressSize {
			ll := header.LinkLocalAddr(mac)
			n.Addrs = append(n.Addrs, netip.PrefixFrom(netip.AddrFrom16(ll.As16()), 64))
		}
		if err := s.addNIC(n); err != nil {
			return s, err
		}
		if l.Gateway {
			if err := gv.SetPromiscuousMode(n.ID, true); err != nil {
				return s, fmt.Errorf("stack: NIC %s: promiscuous mode: %s", name, err)
			}
			if err := gv.SetSpoofing(n.ID, true); err != nil {
				return s, fmt.Errorf("stack: NIC %s: spoofing: %s", name, err)
			}
		}
		routes = append(routes, subnetRoutes(n)...)
		if !bcast && hasIPv4(n.Addrs) {
			// The limited broadcast 255.255.255.255 leaves through the
			// first link with an IPv4 address, as if that link were the
			// host's only segment.
			routes = append(routes, tcpip.Route{Destination: header.IPv4Broadcast.WithPrefix().Subnet(), NIC: n.ID})
			bcast = true
		}
		if l.Gateway4.IsValid() {
			if !l.Gateway4.Is4() {
				return s, fmt.Errorf("stack: NIC %s: IPv4 gateway %s is not IPv4", name, l.Gateway4)
			}
			routes = append(routes, tcpip.Route{Destination: header.IPv4EmptySubnet, Gateway: addrToTCPIP(l.Gateway4), NIC: n.ID})
		}
		if l.Gateway6.IsValid() {
			if !l.Gateway6.Is6() || l.Gateway6.Is4In6() {
				return s, fmt.Errorf("stack: NIC %s: IPv6 gateway %s is not IPv6", name, l.Gateway6)
			}
			routes = append(routes, tcpip.Route{Destination: header.IPv6EmptySubnet, Gateway: addrToTCPIP(l.Gateway6), NIC: n.ID})
		}
	}
	gv.SetRouteTable(routes)
	return s, nil
}

func (s *Stack) addNIC(n NIC) error {
	opts := gvstack.NICOptions{Name: n.Name}
	if n.txQueues > 0 {
		// The NIC closes its queueing discipline when it is removed.
		opts.QDisc = fifo.New(n.endpoint, n.txQueues, txQueueLen)
	}
	if err := s.gv.CreateNICWithOptions(n.ID, n.endpoint, opts); err != nil {
		return fmt.Errorf("stack: create NIC %s: %s", n.Name, err)
	}
	s.nics = append(s.nics, n)
	for _, p := range n.Addrs {
		pa := tcpip.ProtocolAddress{
			Protocol:          protoOf(p.Addr()),
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: addrToTCPIP(p.Addr()), PrefixLen: p.Bits()},
		}
		if err := s.gv.AddProtocolAddress(n.ID, pa, gvstack.AddressProperties{}); err != nil {
			return fmt.Errorf("stack: NIC %s: add address %s: %s", n.Name, p, err)
		}
	}
	return nil
}

func hasIPv4(ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Addr().Is4() {
			return true
		}
	}
	return false
}

func subnetRoutes(n NIC) []tcpip.Route {
	var rs []tcpip.Route
	for _, p := range n.Addrs {
		m := p.Masked()
		sub, err := tcpip.NewSubnet(addrToTCPIP(m.Addr()), tcpip.MaskFromBytes(prefixMask(m)))
		if err != nil {
			continue
		}
		rs = append(rs, tcpip.Route{Destination: sub, NIC: n.ID})
	}
	return rs
}

func prefixMask(p netip.Prefix) []byte {
	n := p.Addr().BitLen() / 8
	m := make([]byte, n)
	bits := p.Bits()
	for i := range m {
		switch {
		case bits >= 8:
			m[i] = 0xff
			bits -= 8
		case bits > 0:
			m[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return m
}

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func addrToTCPIP(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// GV returns the gVisor stack, for the socket layer above.
func (s *Stack) GV() *gvstack.Stack { return s.gv }

// MaxSockets is the capacity of this stack's socket table.
func (s *Stack) MaxSockets() int { return s.maxSockets }

// SocketSites says whether sockets record where they were made
// (Config.SocketSites).
func (s *Stack) SocketSites() bool { return s.sites }

// NICs lists the NICs, loopback first.
func (s *Stack) NICs() []NIC {
	out := make([]NIC, len(s.nics))
	copy(out, s.nics)
	return out
}

// NICByName returns the NIC named name.
func (s *Stack) NICByName(name string) (NIC, bool) {
	for _, n := range s.nics {
		if n.Name == name {
			return n, true
		}
	}
	return NIC{}, false
}

// NICByID returns the NIC with ID id.
func (s *Stack) NICByID(id tcpip.NICID) (NIC, bool) {
	for _, n := range s.nics {
		if n.ID == id {
			return n, true
		}
	}
	return NIC{}, false
}

// IsLocal reports whether a is one of the stack's own addresses (on any
// NIC, loopback included).
func (s *Stack) IsLocal(a netip.Addr) bool {
	a = a.Unmap()
	for _, n := range s.nics {
		for _, p := range n.Addrs {
			if p.Addr() == a {
				return true
			}
		}
	}
	return a.IsLoopback()
}

// Done is closed when Close begins.
func (s *Stack) Done() <-chan struct{} { return s.done }

// OnClose registers f to run at the start of Close, before the protocols
// stop (the socket layer closes its sockets there). Hooks run in reverse
// order of registration. If the stack is already closed, f runs now.
func (s *Stack) OnClose(f func()) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		f()
		return
	}
	s.closeHooks = append(s.closeHooks, f)
	s.mu.Unlock()
}

// ErrClosed is returned for operations on a closed stack.
var ErrClosed = errors.New("stack closed")

// Closed reports whether Close has been called.
func (s *Stack) Closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops the stack: it runs the close hooks, aborts every endpoint,
// closes the links (which stops their goroutines) and waits for all of
// them. It is idempotent and safe to call concurrently.
func (s *Stack) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	hooks := s.closeHooks
	s.closeHooks = nil
	close(s.done)
	s.mu.Unlock()

	for i := len(hooks) - 1; i >= 0; i-- {
		hooks[i]()
	}
	s.gv.Close()
	// gVisor's Wait joins each link before closing it, so the links are
	// closed first: that is what stops their reader goroutines. Closing a
	// link removes its NIC, so the links are joined here too.
	for _, n := range s.nics {
		n.endpoint.Close()
	}
	s.gv.Wait()
	for _, n := range s.nics {
		n.endpoint.Wait()
	}
}
