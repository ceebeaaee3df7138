package relay

// This file makes the stack the namespace's IPv6 router as far as
// autoconfiguration goes (RFC 4861, 4862, 8106): router advertisements
// of the namespace's networks, answered to each router solicitation and
// sent unsolicited from time to time, so that a namespace nobody
// configured (slirp4netns without -c, rootlesskit's child) gets a global
// address by SLAAC, a default route and the DNS server. Each address the
// namespace then claims in those networks (duplicate address detection
// announces it) is let through the link's source filter
// (Config.AddGuest).

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"

	"github.com/tapstack/tapstack/stack"
)

// What the router advertisements say, and how often they are sent.
const (
	// RARouterLifetime is how long the namespace keeps the stack as its
	// default router after an advertisement.
	RARouterLifetime = 1800 * time.Second
	// raValidLifetime and raPreferredLifetime are the lifetimes of the
	// addresses the namespace makes from a prefix (radvd's defaults).
	raValidLifetime     = 24 * time.Hour
	raPreferredLifetime = 4 * time.Hour
	// raDNSLifetime is the RDNSS option's lifetime: at least three times
	// the longest interval between advertisements (RFC 8106 section 5.1).
	raDNSLifetime = RARouterLifetime
	// raMinInterval and raMaxInterval bound the interval between
	// unsolicited advertisements.
	raMinInterval = 30 * time.Second
	raMaxInterval = 60 * time.Second
	// raMaxLearned bounds the addresses learned from duplicate address
	// detection and let through the source filter: a few per network
	// (SLAAC's, temporary ones, a manual one), not a table a spoofer
	// could grow.
	raMaxLearned = 32
)

// raServer sends the router advertisements. Its methods are safe for
// concurrent use.
type raServer struct {
	st       *stack.Stack
	prefixes []netip.Prefix // the namespace's IPv6 networks (masked)
	dns      []netip.Addr
	mtu      int
	// autonomous sets the A flag of the prefixes: the namespace makes its
	// addresses from them (Config.NoSLAAC clears it).
	autonomous bool
	// learn lets an address the namespace claimed through the link's
	// source filter (nil: none).
	learn func(netip.Addr) error
	logf  func(format string, args ...any)

	sent atomic.Uint64 // advertisements sent

	mu      sync.Mutex
	learned map[netip.Addr]bool // protected by mu
}

// newRAServer returns the server for cfg, or nil if cfg turns it off or
// names no IPv6 network.
func newRAServer(cfg *Config, logf func(string, ...any)) *raServer {
	if cfg.NoRA {
		return nil
	}
	s := &raServer{mtu: cfg.MTU, autonomous: !cfg.NoSLAAC, learn: cfg.AddGuest, logf: logf, learned: map[netip.Addr]bool{}}
	for _, p := range cfg.NSPrefixes {
		if p.Addr().Is6() && !p.Addr().Is4In6() && !p.Addr().IsLinkLocalUnicast() {
			if m := p.Masked(); !slices.Contains(s.prefixes, m) {
				s.prefixes = append(s.prefixes, m)
			}
		}
	}
	for _, a := range cfg.DNSAddrs {
		if a.Is6() && !a.Is4In6() {
			s.dns = append(s.dns, a)
		}
	}
	if len(s.prefixes) == 0 {
		return nil
	}
	return s
}

// handle answers a router solicitation and learns the address of a
// duplicate address detection.
func (s *raServer) handle(p *ndpPacket) {
	switch p.Type {
	case header.ICMPv6RouterSolicit:
		// A solicitation from an address gets its answer there (RFC 4861
		// section 6.2.6 allows it); one from :: at all nodes.
		dst, dstMAC := p.Src, p.SrcMAC
		if p.Src.IsUnspecified() {
			dst, dstMAC = netip.Addr{}, ""
		}
		if err := s.send(p.NIC, dst, dstMAC); err != nil {
			s.logf("router advertisement: %v", err)
		}
	case header.ICMPv6NeighborSolicit:
		s.learnAddr(p.Target)
	}
}

// learnAddr lets a, which the namespace claims, through the source
// filter if it lies in an advertised network.
func (s *raServer) learnAddr(a netip.Addr) {
	if s.learn == nil || !s.inPrefixes(a) {
		return
	}
	s.mu.Lock()
	if s.learned[a] || len(s.learned) >= raMaxLearned {
		full := !s.learned[a]
		s.mu.Unlock()
		if full {
			s.logf("router advertisement: the namespace claims %s, beyond %d addresses learned: its packets stay filtered", a, raMaxLearned)
		}
		return
	}
	s.learned[a] = true
	s.mu.Unlock()
	if err := s.learn(a); err != nil {
		s.logf("router advertisement: the namespace claims %s: %v", a, err)
		return
	}
	s.logf("router advertisement: the namespace claims %s", a)
}

func (s *raServer) inPrefixes(a netip.Addr) bool {
	for _, p := range s.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// run sends an advertisement on every link now and then every 30 to 60
// seconds until done is closed.
func (s *raServer) run(done <-chan struct{}) {
	for {
		for _, n := range s.st.NICs() {
			if !n.Loopback {
				// A link not up yet (a TAP the namespace has not set up)
				// fails: the namespace solicits once it is up.
				_ = s.send(n.ID, netip.Addr{}, "")
			}
		}
		t := time.NewTimer(raMinInterval + rand.N(raMaxInterval-raMinInterval))
		select {
		case <-done:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// send sends an advertisement on NIC nic to dst at dstMAC, or (dst
// invalid) to all nodes.
func (s *raServer) send(nic tcpip.NICID, dst netip.Addr, dstMAC tcpip.LinkAddress) error {
	info, ok := s.st.GV().NICInfo()[nic]
	if !ok || len(info.LinkAddress) != header.EthernetAddressSize {
		return fmt.Errorf("NIC %d has no Ethernet address", nic)
	}
	src := header.LinkLocalAddr(info.LinkAddress)
	n, ok := s.st.NICByID(nic)
	if !ok || !hasAddr(n.Addrs, addrFromTCPIP(src)) {
		return fmt.Errorf("NIC %d has no link-local address %s", nic, src)
	}
	to := header.IPv6AllNodesMulticastAddress
	if dst.IsValid() {
		to = tcpip.AddrFrom16(dst.As16())
	} else {
		dstMAC = header.EthernetAddressFromMulticastIPv6Address(to)
	}
	msg := s.advert(info.LinkAddress)
	ic := header.ICMPv6(msg)
	ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: src, Dst: to}))
	pkt := make([]byte, header.IPv6MinimumSize+len(msg))
	header.IPv6(pkt).Encode(&header.IPv6Fields{
		PayloadLength: uint16(len(msg)), TransportProtocol: header.ICMPv6ProtocolNumber, HopLimit: header.NDPHopLimit,
		SrcAddr: src, DstAddr: to,
	})
	copy(pkt[header.IPv6MinimumSize:], msg)
	if terr := s.st.GV().WritePacketToRemote(nic, dstMAC, ipv6.ProtocolNumber, buffer.MakeWithData(pkt)); terr != nil {
		return fmt.Errorf("send to %s: %s", to, terr)
	}
	s.sent.Add(1)
	return nil
}

func hasAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Addr() == a {
			return true
		}
	}
	return false
}

// advert is the ICMPv6 router advertisement (checksum left 0): managed
// and other-configuration flags clear (no DHCPv6), the router lifetime,
// then the options: the stack's link-layer address, the MTU, each
// network (on-link, autonomous unless NoSLAAC) and the DNS servers.
func (s *raServer) advert(mac tcpip.LinkAddress) []byte {
	be := binary.BigEndian
	b := make([]byte, 16, 256)
	b[0] = byte(header.ICMPv6RouterAdvert)
	b[4] = 64 // the hop limit the namespace should use
	be.PutUint16(b[6:], uint16(RARouterLifetime/time.Second))
	// Source link-layer address (type 1).
	b = append(b, 1, 1)
	b = append(b, mac...)
	if s.mtu >= header.IPv6MinimumMTU {
		// MTU (type 5).
		b = append(b, 5, 1, 0, 0)
		b = be.AppendUint32(b, uint32(s.mtu))
	}
	for _, p := range s.prefixes {
		// Prefix information (type 3): on-link (L), autonomous (A).
		flags := byte(0x80)
		if s.autonomous && p.Bits() == 64 {
			flags |= 0x40 // SLAAC needs a 64-bit prefix on Ethernet
		}
		b = append(b, 3, 4, byte(p.Bits()), flags)
		b = be.AppendUint32(b, uint32(raValidLifetime/time.Second))
		b = be.AppendUint32(b, uint32(raPreferredLifetime/time.Second))
		b = append(b, 0, 0, 0, 0)
		a := p.Addr().As16()
		b = append(b, a[:]...)
	}
	if len(s.dns) > 0 {
		// Recursive DNS server (type 25, RFC 8106).
		b = append(b, 25, byte(1+2*len(s.dns)), 0, 0)
		b = be.AppendUint32(b, uint32(raDNSLifetime/time.Second))
		for _, a := range s.dns {
			a16 := a.As16()
			b = append(b, a16[:]...)
		}
	}
	return b
}
