package relay

// This file is the namespace's DHCPv4 server, as libslirp's: a client
// that asks (busybox udhcpc, dhclient, systemd-networkd in the
// namespace, a VM behind it) gets network+15, then +16 and so on up to
// 16 leases, the same address again for the same MAC, the stack as its
// router and DNS server, and the link's MTU. The server answers at the
// link layer (the client may have no address yet) and lets each address
// it leases through the link's source filter (Config.AddGuest).

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// DHCP's ports and the leases, as libslirp gives them.
const (
	dhcpServerPort = 67
	dhcpClientPort = 68
	// dhcpFirstHost is the host number of the first lease (10.0.2.15).
	dhcpFirstHost = 15
	// dhcpPoolSize is the number of leases.
	dhcpPoolSize = 16
	// DHCPLeaseTime is the lease the server gives; the client renews at
	// half of it (T1) and rebinds at seven eighths (T2).
	DHCPLeaseTime = 24 * time.Hour
	// dhcpOfferHold is how long an offered address waits for the
	// client's request before another client may have it.
	dhcpOfferHold = time.Minute
)

// leaseState is where an address of the pool stands.
type leaseState int

const (
	leaseFree     leaseState = iota
	leaseOffered             // offered to mac, not yet requested
	leaseBound               // leased to mac
	leaseDeclined            // a client found it in use (DHCPDECLINE)
)

// dhcpLease is an address of the pool.
type dhcpLease struct {
	addr  netip.Addr
	mac   string // the client that holds or last held it ("": none yet)
	state leaseState
	// until ends an offer, a lease or a decline; the address is free
	// after it.
	until time.Time
}

func (l *dhcpLease) free(now time.Time) bool {
	return l.state == leaseFree || now.After(l.until)
}

// availableLocked says whether l may go to a client that does not hold
// it.
func (s *dhcpServer) availableLocked(l *dhcpLease, now time.Time) bool {
	return l.free(now) && (s.taken == nil || !s.taken(l.addr))
}

// dhcpServer is the state of the DHCPv4 server. Its methods are safe for
// concurrent use.
type dhcpServer struct {
	server netip.Addr   // the stack's address: server identifier, router
	net    netip.Prefix // the network leased from (masked)
	dns    []netip.Addr
	mtu    int
	// bind lets a leased address through the link's source filter.
	bind func(netip.Addr) error
	// taken says whether an address is the stack's own.
	taken func(netip.Addr) bool
	logf  func(format string, args ...any)
	now   func() time.Time

	mu     sync.Mutex
	leases []dhcpLease // protected by mu
}

// newDHCPServer returns the server for cfg, or nil if cfg turns it off or
// has no IPv4 network with a gateway. taken says whether an address of
// the pool is someone's already (the stack's own); it is not leased.
func newDHCPServer(cfg *Config, taken func(netip.Addr) bool, logf func(string, ...any)) *dhcpServer {
	if cfg.NoDHCP || !cfg.Gateway4.Is4() {
		return nil
	}
	var network netip.Prefix
	for _, p := range cfg.NSPrefixes {
		if p.Addr().Is4() {
			network = p.Masked()
			break
		}
	}
	if !network.IsValid() {
		return nil
	}
	s := &dhcpServer{server: cfg.Gateway4, net: network, mtu: cfg.MTU, bind: cfg.AddGuest, taken: taken, logf: logf, now: time.Now}
	for _, a := range cfg.DNSAddrs {
		if a.Is4() {
			s.dns = append(s.dns, a)
		}
	}
	base := binary.BigEndian.Uint32(network.Addr().AsSlice())
	last := base | (1<<(32-network.Bits()) - 1) // the broadcast address
	for i := uint32(0); i < dhcpPoolSize; i++ {
		n := base + dhcpFirstHost + i
		a := netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, n)))
		if n >= last || a == cfg.Gateway4 || slices.Contains(cfg.NSAddrs, a) || slices.Contains(cfg.DNSAddrs, a) {
			continue
		}
		s.leases = append(s.leases, dhcpLease{addr: a})
	}
	if len(s.leases) == 0 {
		return nil
	}
	return s
}

// Leases counts the addresses leased now.
func (s *dhcpServer) Leases() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	n := 0
	for i := range s.leases {
		if l := &s.leases[i]; l.state == leaseBound && !l.free(now) {
			n++
		}
	}
	return n
}

// leaseOfLocked is mac's address: the one it holds, was offered or last
// held, unless someone else took it since or it was declined.
func (s *dhcpServer) leaseOfLocked(mac string) *dhcpLease {
	for i := range s.leases {
		if l := &s.leases[i]; l.mac == mac && l.state != leaseDeclined {
			return l
		}
	}
	return nil
}

// lookupLocked is the pool's entry for a, or nil.
func (s *dhcpServer) lookupLocked(a netip.Addr) *dhcpLease {
	for i := range s.leases {
		if s.leases[i].addr == a {
			return &s.leases[i]
		}
	}
	return nil
}

// allocateLocked picks mac's address: its own, else the one it asks for
// if free, else a free one that nobody held yet, else any free one; nil
// when the pool is exhausted.
func (s *dhcpServer) allocateLocked(mac string, requested netip.Addr, now time.Time) *dhcpLease {
	if l := s.leaseOfLocked(mac); l != nil {
		return l
	}
	if l := s.lookupLocked(requested); l != nil && s.availableLocked(l, now) {
		return l
	}
	var reuse *dhcpLease
	for i := range s.leases {
		l := &s.leases[i]
		if !s.availableLocked(l, now) {
			continue
		}
		if l.mac == "" {
			return l
		}
		if reuse == nil {
			reuse = l
		}
	}
	return reuse
}

// bindLocked leases l to mac.
func (s *dhcpServer) bindLocked(l *dhcpLease, mac string, now time.Time) {
	l.mac, l.state, l.until = mac, leaseBound, now.Add(DHCPLeaseTime)
}

// confirmLocked decides a request for a (INIT-REBOOT, RENEWING,
// REBINDING): the address must be mac's lease, or, for a client the
// server does not know (a lease from before a restart), a free address
// of the pool. It returns the lease bound to mac, or nil (NAK).
func (s *dhcpServer) confirmLocked(mac string, a netip.Addr, now time.Time) *dhcpLease {
	l := s.leaseOfLocked(mac)
	if l == nil {
		if l = s.lookupLocked(a); l == nil || !s.availableLocked(l, now) {
			return nil
		}
	}
	if l.addr != a {
		return nil
	}
	s.bindLocked(l, mac, now)
	return l
}

// dhcpReply is what the server sends for a message: msg to dst (IP), in
// a frame to the client's MAC.
type dhcpReply struct {
	msg *dhcpv4.DHCPv4
	dst netip.Addr
}

// handle serves one datagram to port 67. It reports whether the datagram
// was for the server (sent to 255.255.255.255 or the server's address):
// those are never relayed, whether they hold a request or not.
func (s *dhcpServer) handle(d *linkDatagram) bool {
	if d.Dst.Addr() != s.server && d.Dst.Addr() != netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false // to another host's port 67: relayed
	}
	req, err := dhcpv4.FromBytes(d.Payload)
	if err != nil || req.OpCode != dhcpv4.OpcodeBootRequest {
		return true // not for anyone
	}
	r := s.answer(req, d.Src.Addr())
	if r == nil || r.msg == nil {
		return true
	}
	// A client with an address gets its answer there; one without it
	// (or that asks for it) at the broadcast address, in a frame to
	// its MAC.
	if err := d.Reply(netip.AddrPortFrom(s.server, dhcpServerPort), netip.AddrPortFrom(r.dst, dhcpClientPort), d.SrcMAC, r.msg.ToBytes()); err != nil {
		s.logf("dhcp: %v", err)
	}
	return true
}

// answer decides what to answer req, which came from src (RFC 2131
// section 4.3); nil: nothing.
func (s *dhcpServer) answer(req *dhcpv4.DHCPv4, src netip.Addr) *dhcpReply {
	if req.HWType != 1 || len(req.ClientHWAddr) != 6 || !isZero4(req.GatewayIPAddr) {
		return nil // not Ethernet, or through a relay agent: not on this link
	}
	mac := req.ClientHWAddr.String()
	requested := addr4(req.RequestedIPAddress())
	ciaddr := addr4(req.ClientIPAddr)
	serverID := addr4(req.ServerIdentifier())
	ours := !serverID.IsValid() || serverID == s.server
	now := s.now()

	s.mu.Lock()
	defer s.mu.Unlock()
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		l := s.allocateLocked(mac, requested, now)
		if l == nil {
			s.logf("dhcp: no address left for %s: all %d are leased", mac, len(s.leases))
			return nil
		}
		if l.state != leaseBound || l.free(now) {
			l.mac, l.state, l.until = mac, leaseOffered, now.Add(dhcpOfferHold)
		}
		return s.replyLocked(req, dhcpv4.MessageTypeOffer, l.addr)

	case dhcpv4.MessageTypeRequest:
		var l *dhcpLease
		switch {
		case serverID.IsValid(): // SELECTING
			if !ours {
				// The client took another server's offer: ours is free.
				if l := s.leaseOfLocked(mac); l != nil && l.state == leaseOffered {
					l.mac, l.state = "", leaseFree
				}
				return nil
			}
			if l = s.leaseOfLocked(mac); l != nil && (l.addr != requested || l.state == leaseFree) {
				l = nil
			}
			if l != nil {
				s.bindLocked(l, mac, now)
			}
		case requested.IsValid() && !ciaddr.IsValid(): // INIT-REBOOT
			l = s.confirmLocked(mac, requested, now)
		case ciaddr.IsValid(): // RENEWING or REBINDING
			l = s.confirmLocked(mac, ciaddr, now)
		default:
			return nil
		}
		if l == nil {
			s.logf("dhcp: NAK to %s, which asked for %v", mac, firstValid(requested, ciaddr))
			return &dhcpReply{msg: s.nakLocked(req), dst: netip.AddrFrom4([4]byte{255, 255, 255, 255})}
		}
		if s.bind != nil {
			if err := s.bind(l.addr); err != nil {
				// Its packets would be dropped: no ACK, and the client
				// asks again.
				s.logf("dhcp: %s for %s cannot be let through the source filter: %v", l.addr, mac, err)
				l.state, l.until = leaseOffered, now.Add(dhcpOfferHold)
				return nil
			}
		}
		s.logf("dhcp: %s leased to %s", l.addr, mac)
		return s.replyLocked(req, dhcpv4.MessageTypeAck, l.addr)

	case dhcpv4.MessageTypeDecline:
		if l := s.leaseOfLocked(mac); ours && l != nil && l.addr == requested {
			s.logf("dhcp: %s declined by %s: in use on the link", l.addr, mac)
			l.mac, l.state, l.until = "", leaseDeclined, now.Add(DHCPLeaseTime)
		}
		return nil

	case dhcpv4.MessageTypeRelease:
		if l := s.leaseOfLocked(mac); ours && l != nil && l.addr == ciaddr {
			l.state = leaseFree // mac keeps it if it comes back first
		}
		return nil

	case dhcpv4.MessageTypeInform:
		to := ciaddr
		if !to.IsValid() {
			to = src
		}
		if !to.IsValid() || to.IsUnspecified() {
			return nil
		}
		r := s.replyLocked(req, dhcpv4.MessageTypeAck, netip.Addr{})
		if r != nil {
			r.dst = to
		}
		return r
	}
	return nil
}

// replyLocked builds an OFFER or an ACK of yiaddr (none: the ACK of an
// INFORM, without a lease) with the server's options.
func (s *dhcpServer) replyLocked(req *dhcpv4.DHCPv4, typ dhcpv4.MessageType, yiaddr netip.Addr) *dhcpReply {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.server.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(s.net.Bits(), 32))),
		dhcpv4.WithOption(dhcpv4.OptRouter(s.server.AsSlice())),
	}
	if len(s.dns) > 0 {
		ips := make([]net.IP, len(s.dns))
		for i, a := range s.dns {
			ips[i] = a.AsSlice()
		}
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(ips...)))
	}
	if s.mtu >= 68 && s.mtu <= 0xffff {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, binary.BigEndian.AppendUint16(nil, uint16(s.mtu))))
	}
	if typ == dhcpv4.MessageTypeAck {
		mods = append(mods, dhcpv4.WithClientIP(req.ClientIPAddr))
	}
	dst := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	if yiaddr.IsValid() {
		mods = append(mods, dhcpv4.WithYourIP(yiaddr.AsSlice()),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(DHCPLeaseTime)),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(DHCPLeaseTime/2)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(DHCPLeaseTime*7/8)))
		if c := addr4(req.ClientIPAddr); c.IsValid() && !req.IsBroadcast() {
			dst = c // renewing: it has its address
		}
	}
	msg, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		return nil
	}
	return &dhcpReply{msg: msg, dst: dst}
}

// nakLocked builds a NAK of req.
func (s *dhcpServer) nakLocked(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	msg, err := dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.server.AsSlice())),
		dhcpv4.WithClientIP(net.IPv4zero), dhcpv4.WithBroadcast(true))
	if err != nil {
		return nil
	}
	return msg
}

// addr4 converts an IPv4 address of a DHCP message; the zero Addr for
// none or 0.0.0.0.
func addr4(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || a.Unmap().IsUnspecified() {
		return netip.Addr{}
	}
	return a.Unmap()
}

func isZero4(ip net.IP) bool { return !addr4(ip).IsValid() }

func firstValid(as ...netip.Addr) netip.Addr {
	for _, a := range as {
		if a.IsValid() {
			return a
		}
	}
	return netip.Addr{}
}
