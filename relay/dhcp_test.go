package relay

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack"
	"github.com/tapstack/tapstack/stack/nshost"
)

// wireRig is a gateway stack with the relay as the daemon configures it
// on a network (the stack at .2 and ::2, DNS at .3 and ::3, the
// namespace at .100 and ::100), behind the daemon's source filter, with
// the other end of its cable left raw: the test writes the namespace's
// frames and reads the stack's.
type wireRig struct {
	g      *Gateway
	wire   link.Device
	frames chan []byte
	// guests are the addresses the relay let through the filter.
	mu     sync.Mutex
	guests []netip.Addr
}

func newWireRig(t *testing.T, net4, net6 string, cfg Config) *wireRig {
	t.Helper()
	n4, n6 := netip.MustParsePrefix(net4), netip.MustParsePrefix(net6)
	plan, err := nshost.PlanFor(n4, n6)
	if err != nil {
		t.Fatal(err)
	}
	da, db := link.Pipe()
	sources := nshost.NewSourceSet(nshost.Addrs(plan.NS))
	la, err := link.New(link.Options{Devices: []link.Device{da}, Filter: sources.Allows})
	if err != nil {
		t.Fatal(err)
	}
	r := &wireRig{wire: db, frames: make(chan []byte, 256)}
	cfg.NSAddrs = nshost.Addrs(plan.NS)
	cfg.NSPrefixes = plan.NS
	cfg.DNSAddrs = nshost.Addrs(plan.DNS)
	cfg.Gateway4, _ = plan.Gateways()
	cfg.MTU = 1500
	cfg.AddGuest = func(a netip.Addr) error {
		r.mu.Lock()
		r.guests = append(r.guests, a)
		r.mu.Unlock()
		sources.Add(a)
		return nil
	}
	r.g = New(cfg)
	gw, err := stack.New(stack.Config{Init: r.g.Install, Links: []stack.LinkConfig{{
		Name: "eth0", Endpoint: la, Gateway: true, Addrs: append(append([]netip.Prefix{}, plan.Stack...), plan.DNS...),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.g.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			b := make([]byte, 2000)
			n, err := db.ReadFrame(b)
			if err != nil {
				return
			}
			select {
			case r.frames <- b[:n]:
			default: // the test does not want it
			}
		}
	}()
	t.Cleanup(func() {
		r.g.Close()
		gw.Close()
		db.Close()
		<-done
	})
	return r
}

func (r *wireRig) guestList() []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]netip.Addr(nil), r.guests...)
}

// next returns the first frame within a second that match accepts.
func (r *wireRig) next(t *testing.T, what string, match func(f []byte) bool) []byte {
	t.Helper()
	deadline := time.After(time.Second)
	for {
		select {
		case f := <-r.frames:
			if match(f) {
				return f
			}
		case <-deadline:
			t.Fatalf("no %s from the stack within a second", what)
			return nil
		}
	}
}

// none fails if a frame that match accepts comes within wait.
func (r *wireRig) none(t *testing.T, what string, wait time.Duration, match func(f []byte) bool) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case f := <-r.frames:
			if match(f) {
				t.Fatalf("the stack sent %s", what)
			}
		case <-deadline:
			return
		}
	}
}

// dhcpFrame is msg from mac at src:68 to dst:67, in a checksummed
// IPv4/UDP datagram.
func dhcpFrame(mac net.HardwareAddr, src, dst string, msg *dhcpv4.DHCPv4) []byte {
	payload := msg.ToBytes()
	u := make([]byte, header.UDPMinimumSize+len(payload))
	header.UDP(u).Encode(&header.UDPFields{SrcPort: dhcpClientPort, DstPort: dhcpServerPort, Length: uint16(len(u))})
	copy(u[header.UDPMinimumSize:], payload)
	header.UDP(u).SetChecksum(^checksum.Checksum(u, pseudo(src, dst, header.UDPProtocolNumber, len(u))))
	f := ip4Packet(src, dst, header.UDPProtocolNumber, u)
	header.Ethernet(f).Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(mac), DstAddr: seedDstMAC, Type: header.IPv4ProtocolNumber})
	return f
}

// dhcpReplyTo parses a frame of the stack's if it is a DHCP reply to
// mac; it checks the framing on the way.
func dhcpReplyTo(t *testing.T, mac net.HardwareAddr, f []byte) (msg *dhcpv4.DHCPv4, ipDst netip.Addr, ok bool) {
	eth := header.Ethernet(f)
	if len(f) < header.EthernetMinimumSize+header.IPv4MinimumSize+header.UDPMinimumSize || eth.Type() != header.IPv4ProtocolNumber {
		return nil, netip.Addr{}, false
	}
	ip := header.IPv4(f[header.EthernetMinimumSize:])
	if ip.Protocol() != uint8(header.UDPProtocolNumber) {
		return nil, netip.Addr{}, false
	}
	u := header.UDP(ip.Payload())
	if u.SourcePort() != dhcpServerPort || u.DestinationPort() != dhcpClientPort {
		return nil, netip.Addr{}, false
	}
	if eth.DestinationAddress() != tcpip.LinkAddress(mac) {
		return nil, netip.Addr{}, false
	}
	if !ip.IsChecksumValid() || !u.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(u.Payload(), 0)) {
		t.Fatalf("a DHCP reply with a bad checksum: %x", f)
	}
	m, err := dhcpv4.FromBytes(u.Payload())
	if err != nil {
		t.Fatalf("a DHCP reply that does not parse: %v", err)
	}
	if !slices.Equal(m.ClientHWAddr, mac) {
		return nil, netip.Addr{}, false
	}
	return m, addrFromTCPIP(ip.DestinationAddress()), true
}

// exchange sends msg from mac and returns the reply of the type wanted
// and where it was sent.
func (r *wireRig) exchange(t *testing.T, mac net.HardwareAddr, src, dst string, msg *dhcpv4.DHCPv4, want dhcpv4.MessageType) (*dhcpv4.DHCPv4, netip.Addr) {
	t.Helper()
	if err := r.wire.WriteFrame([][]byte{dhcpFrame(mac, src, dst, msg)}); err != nil {
		t.Fatal(err)
	}
	var reply *dhcpv4.DHCPv4
	var to netip.Addr
	r.next(t, "DHCP "+want.String(), func(f []byte) bool {
		m, ipDst, ok := dhcpReplyTo(t, mac, f)
		if ok && m.TransactionID == msg.TransactionID {
			reply, to = m, ipDst
			return true
		}
		return false
	})
	if reply.MessageType() != want {
		t.Fatalf("got a %s, want a %s: %s", reply.MessageType(), want, reply.Summary())
	}
	return reply, to
}

var broadcast4 = netip.MustParseAddr("255.255.255.255")

// TestDHCPLeaseOverTheWire: DISCOVER from 0.0.0.0 to 255.255.255.255
// reaches the server through gVisor and the source filter, the OFFER and
// ACK come back to the client's MAC at the broadcast address with
// libslirp's first lease and the options; the ACK lets the address
// through the filter, and a renewal from it is answered there. A
// --cidr network leases from its own .15; a second MAC gets .16, the
// first its own again.
func TestDHCPLeaseOverTheWire(t *testing.T) {
	for _, c := range []struct{ net4, first, second, gw, dns string }{
		{"10.0.2.0/24", "10.0.2.15", "10.0.2.16", "10.0.2.2", "10.0.2.3"},
		{"10.0.3.0/24", "10.0.3.15", "10.0.3.16", "10.0.3.2", "10.0.3.3"},
	} {
		t.Run(c.net4, func(t *testing.T) {
			r := newWireRig(t, c.net4, "fd00::/64", Config{})
			mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x15}
			disc, err := dhcpv4.NewDiscovery(mac)
			if err != nil {
				t.Fatal(err)
			}
			offer, to := r.exchange(t, mac, "0.0.0.0", "255.255.255.255", disc, dhcpv4.MessageTypeOffer)
			if to != broadcast4 {
				t.Errorf("OFFER sent to %s, want 255.255.255.255", to)
			}
			if got := offer.YourIPAddr.String(); got != c.first {
				t.Fatalf("offered %s, want %s", got, c.first)
			}
			checkOptions(t, offer, c.gw, c.dns, 1500, true)
			req, err := dhcpv4.NewRequestFromOffer(offer)
			if err != nil {
				t.Fatal(err)
			}
			ack, to := r.exchange(t, mac, "0.0.0.0", "255.255.255.255", req, dhcpv4.MessageTypeAck)
			if to != broadcast4 || ack.YourIPAddr.String() != c.first {
				t.Fatalf("ACK of %s to %s, want %s to 255.255.255.255", ack.YourIPAddr, to, c.first)
			}
			checkOptions(t, ack, c.gw, c.dns, 1500, true)
			if got := r.guestList(); !slices.Contains(got, netip.MustParseAddr(c.first)) {
				t.Fatalf("the lease was not let through the source filter (guests %v)", got)
			}
			if n := r.g.dhcp.Leases(); n != 1 {
				t.Errorf("%d leases counted, want 1", n)
			}
			// RENEWING: unicast from the leased address to the server;
			// the source filter lets it through now.
			renew, err := dhcpv4.NewRenewFromAck(ack)
			if err != nil {
				t.Fatal(err)
			}
			ack2, to := r.exchange(t, mac, c.first, c.gw, renew, dhcpv4.MessageTypeAck)
			if to.String() != c.first || ack2.YourIPAddr.String() != c.first {
				t.Fatalf("renewal ACK of %s to %s, want %s to %s", ack2.YourIPAddr, to, c.first, c.first)
			}
			// Another client gets the next address; the first its own.
			mac2 := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x16}
			disc2, _ := dhcpv4.NewDiscovery(mac2)
			if offer2, _ := r.exchange(t, mac2, "0.0.0.0", "255.255.255.255", disc2, dhcpv4.MessageTypeOffer); offer2.YourIPAddr.String() != c.second {
				t.Fatalf("second client offered %s, want %s", offer2.YourIPAddr, c.second)
			}
			disc3, _ := dhcpv4.NewDiscovery(mac)
			if offer3, _ := r.exchange(t, mac, "0.0.0.0", "255.255.255.255", disc3, dhcpv4.MessageTypeOffer); offer3.YourIPAddr.String() != c.first {
				t.Fatalf("first client offered %s again, want %s", offer3.YourIPAddr, c.first)
			}
			if got := r.g.Stats().UDPRelayed; got != 0 {
				t.Errorf("%d DHCP datagrams relayed, want none", got)
			}
		})
	}
}

// checkOptions checks the options of an OFFER or ACK (lease: with the
// lease times).
func checkOptions(t *testing.T, m *dhcpv4.DHCPv4, gw, dns string, mtu int, lease bool) {
	t.Helper()
	if got := m.ServerIdentifier().String(); got != gw {
		t.Errorf("server identifier %s, want %s", got, gw)
	}
	if got := net.IP(m.SubnetMask()).String(); got != "255.255.255.0" {
		t.Errorf("subnet mask %s, want 255.255.255.0", got)
	}
	if got := m.Router(); len(got) != 1 || got[0].String() != gw {
		t.Errorf("routers %v, want %s", got, gw)
	}
	if got := m.DNS(); dns == "" && len(got) != 0 || dns != "" && (len(got) != 1 || got[0].String() != dns) {
		t.Errorf("DNS %v, want %q", got, dns)
	}
	if got := m.GetOneOption(dhcpv4.OptionInterfaceMTU); len(got) != 2 || int(binary.BigEndian.Uint16(got)) != mtu {
		t.Errorf("MTU option %x, want %d", got, mtu)
	}
	if !lease {
		if m.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
			t.Errorf("a lease time in an answer without a lease")
		}
		return
	}
	if got := m.IPAddressLeaseTime(0); got != 86400*time.Second {
		t.Errorf("lease time %v, want 86400 s", got)
	}
	if t1, t2 := m.IPAddressRenewalTime(0), m.IPAddressRebindingTime(0); t1 != 43200*time.Second || t2 != 75600*time.Second {
		t.Errorf("T1 %v T2 %v, want 43200 s and 75600 s", t1, t2)
	}
}

// TestDHCPNoDHCPRelaysPort67: with NoDHCP nothing answers a DISCOVER.
func TestDHCPNoDHCPRelaysPort67(t *testing.T) {
	r := newWireRig(t, "10.0.2.0/24", "fd00::/64", Config{NoDHCP: true})
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x15}
	disc, _ := dhcpv4.NewDiscovery(mac)
	if err := r.wire.WriteFrame([][]byte{dhcpFrame(mac, "0.0.0.0", "255.255.255.255", disc)}); err != nil {
		t.Fatal(err)
	}
	r.none(t, "a DHCP reply with NoDHCP", 300*time.Millisecond, func(f []byte) bool {
		_, _, ok := dhcpReplyTo(t, mac, f)
		return ok
	})
}

// testServer is a DHCP server on 10.0.2.0/24 with a clock of the test's.
func testServer(t *testing.T, dns ...netip.Addr) (*dhcpServer, *time.Time, *[]netip.Addr) {
	t.Helper()
	var bound []netip.Addr
	cfg := Config{
		NSPrefixes: []netip.Prefix{netip.MustParsePrefix("10.0.2.100/24")},
		NSAddrs:    []netip.Addr{netip.MustParseAddr("10.0.2.100")},
		Gateway4:   netip.MustParseAddr("10.0.2.2"), DNSAddrs: dns, MTU: 65520,
		AddGuest: func(a netip.Addr) error { bound = append(bound, a); return nil },
	}
	s := newDHCPServer(&cfg, func(netip.Addr) bool { return false }, t.Logf)
	if s == nil {
		t.Fatal("no server")
	}
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	return s, &now, &bound
}

func macN(n byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 1, n} }

// lease runs DISCOVER and REQUEST for mac and returns the address.
func lease(t *testing.T, s *dhcpServer, mac net.HardwareAddr) netip.Addr {
	t.Helper()
	disc, _ := dhcpv4.NewDiscovery(mac)
	offer := s.answer(disc, netip.Addr{})
	if offer == nil || offer.msg.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("no OFFER for %s", mac)
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer.msg)
	ack := s.answer(req, netip.Addr{})
	if ack == nil || ack.msg.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("no ACK for %s: %v", mac, ack)
	}
	return addr4(ack.msg.YourIPAddr)
}

func typeOf(r *dhcpReply) string {
	if r == nil {
		return "nothing"
	}
	return r.msg.MessageType().String()
}

// TestDHCPServerStates: the message types and client states of RFC 2131
// section 4.3 against the lease table.
func TestDHCPServerStates(t *testing.T) {
	s, now, bound := testServer(t, netip.MustParseAddr("10.0.2.3"))
	a := macN(1)
	if got := lease(t, s, a); got.String() != "10.0.2.15" {
		t.Fatalf("first lease %s, want 10.0.2.15", got)
	}
	if len(*bound) != 1 || (*bound)[0].String() != "10.0.2.15" {
		t.Fatalf("addresses let through: %v", *bound)
	}
	server := net.ParseIP("10.0.2.2")

	t.Run("selecting another server", func(t *testing.T) {
		b := macN(2)
		disc, _ := dhcpv4.NewDiscovery(b)
		offer := s.answer(disc, netip.Addr{})
		if got := offer.msg.YourIPAddr.String(); got != "10.0.2.16" {
			t.Fatalf("offered %s, want 10.0.2.16", got)
		}
		req, _ := dhcpv4.NewRequestFromOffer(offer.msg, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.0.2.99"))))
		if r := s.answer(req, netip.Addr{}); r != nil {
			t.Fatalf("answered a REQUEST for another server with a %s", typeOf(r))
		}
		// The offer is free again: a third client gets .16.
		if got := lease(t, s, macN(3)); got.String() != "10.0.2.16" {
			t.Fatalf("after the other server was chosen, next lease %s, want 10.0.2.16", got)
		}
	})

	t.Run("selecting a wrong address", func(t *testing.T) {
		disc, _ := dhcpv4.NewDiscovery(macN(4))
		offer := s.answer(disc, netip.Addr{})
		req, _ := dhcpv4.NewRequestFromOffer(offer.msg, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.0.2.20"))))
		r := s.answer(req, netip.Addr{})
		if typeOf(r) != "NAK" || r.dst != broadcast4 {
			t.Fatalf("REQUEST of another address than offered: %s", typeOf(r))
		}
	})

	t.Run("init-reboot", func(t *testing.T) {
		for _, c := range []struct {
			mac  net.HardwareAddr
			ip   string
			want string
		}{
			{a, "10.0.2.15", "ACK"},          // its own
			{a, "10.0.2.16", "NAK"},          // another client's
			{macN(9), "10.0.3.15", "NAK"},    // another network
			{macN(9), "10.0.2.16", "NAK"},    // leased to another client
			{macN(10), "10.0.2.30", "ACK"},   // a lease from before a restart, free
			{macN(10), "10.0.2.29", "NAK"},   // not its lease
			{macN(11), "10.0.2.100", "NAK"},  // outside the pool
			{macN(12), "10.0.2.2", "NAK"},    // the server
			{macN(13), "192.168.1.5", "NAK"}, // elsewhere
		} {
			req, _ := dhcpv4.New(dhcpv4.WithHwAddr(c.mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
				dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(c.ip))))
			r := s.answer(req, netip.Addr{})
			if typeOf(r) != c.want {
				t.Errorf("INIT-REBOOT of %s asking %s: %s, want %s", c.mac, c.ip, typeOf(r), c.want)
			}
			if c.want == "ACK" && r.msg.YourIPAddr.String() != c.ip {
				t.Errorf("INIT-REBOOT of %s: ACK of %s, want %s", c.mac, r.msg.YourIPAddr, c.ip)
			}
		}
	})

	t.Run("renewing and rebinding", func(t *testing.T) {
		for _, c := range []struct {
			mac       net.HardwareAddr
			ciaddr    string
			broadcast bool
			want      string
			dst       string
		}{
			{a, "10.0.2.15", false, "ACK", "10.0.2.15"},      // RENEWING: unicast answer
			{a, "10.0.2.15", true, "ACK", "255.255.255.255"}, // asks for broadcast
			{a, "10.0.2.16", false, "NAK", "255.255.255.255"},
			{macN(20), "10.0.2.15", false, "NAK", "255.255.255.255"},
		} {
			req, _ := dhcpv4.New(dhcpv4.WithHwAddr(c.mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
				dhcpv4.WithClientIP(net.ParseIP(c.ciaddr)), dhcpv4.WithBroadcast(c.broadcast))
			r := s.answer(req, netip.Addr{})
			if typeOf(r) != c.want || r.dst.String() != c.dst {
				t.Errorf("renewal of %s from %s: %s to %v, want %s to %s", c.mac, c.ciaddr, typeOf(r), r.dst, c.want, c.dst)
			}
			if c.want == "ACK" {
				if r.msg.YourIPAddr.String() != c.ciaddr || r.msg.ClientIPAddr.String() != c.ciaddr {
					t.Errorf("renewal ACK: yiaddr %s ciaddr %s, want %s", r.msg.YourIPAddr, r.msg.ClientIPAddr, c.ciaddr)
				}
				checkOptions(t, r.msg, "10.0.2.2", "10.0.2.3", 65520, true)
			}
		}
	})

	t.Run("inform", func(t *testing.T) {
		inf, _ := dhcpv4.NewInform(macN(30), net.ParseIP("10.0.2.100"))
		r := s.answer(inf, netip.MustParseAddr("10.0.2.100"))
		if typeOf(r) != "ACK" || r.dst.String() != "10.0.2.100" {
			t.Fatalf("INFORM: %s to %v, want an ACK to 10.0.2.100", typeOf(r), r.dst)
		}
		if !isZero4(r.msg.YourIPAddr) {
			t.Errorf("INFORM's ACK has yiaddr %s", r.msg.YourIPAddr)
		}
		checkOptions(t, r.msg, "10.0.2.2", "10.0.2.3", 65520, false)
	})

	t.Run("release", func(t *testing.T) {
		c := macN(40)
		got := lease(t, s, c)
		before := s.Leases()
		rel, _ := dhcpv4.New(dhcpv4.WithHwAddr(c), dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease),
			dhcpv4.WithClientIP(got.AsSlice()), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)))
		if r := s.answer(rel, netip.Addr{}); r != nil {
			t.Fatalf("RELEASE answered with a %s", typeOf(r))
		}
		if s.Leases() != before-1 {
			t.Fatalf("%d leases after a RELEASE, want %d", s.Leases(), before-1)
		}
		// The same client gets the same address back.
		if again := lease(t, s, c); again != got {
			t.Fatalf("after a RELEASE %s got %s, want %s again", c, again, got)
		}
	})

	t.Run("decline", func(t *testing.T) {
		c := macN(50)
		got := lease(t, s, c)
		dec, _ := dhcpv4.New(dhcpv4.WithHwAddr(c), dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(got.AsSlice())), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(server)))
		if r := s.answer(dec, netip.Addr{}); r != nil {
			t.Fatalf("DECLINE answered with a %s", typeOf(r))
		}
		again := lease(t, s, c)
		if again == got {
			t.Fatalf("a declined address %s was leased again", got)
		}
		// Nobody gets it until a lease time has passed.
		for i := byte(0); i < 16; i++ {
			disc, _ := dhcpv4.NewDiscovery(macN(100 + i))
			if r := s.answer(disc, netip.Addr{}); r != nil && addr4(r.msg.YourIPAddr) == got {
				t.Fatalf("the declined %s offered to another client", got)
			}
		}
		*now = now.Add(DHCPLeaseTime + time.Second)
		found := false
		for i := byte(0); i < 16 && !found; i++ {
			disc, _ := dhcpv4.NewDiscovery(macN(150 + i))
			r := s.answer(disc, netip.Addr{})
			found = r != nil && addr4(r.msg.YourIPAddr) == got
		}
		if !found {
			t.Fatalf("the declined %s never offered again after a lease time", got)
		}
	})
}

// TestDHCPPoolOf16: 16 clients get .15 to .30 in order, the 17th
// nothing until a lease expires; the plan's addresses are left out of
// the pool, and with no DNS the option is left out.
func TestDHCPPoolOf16(t *testing.T) {
	s, now, _ := testServer(t)
	for i := 0; i < 16; i++ {
		want := netip.AddrFrom4([4]byte{10, 0, 2, byte(15 + i)})
		if got := lease(t, s, macN(byte(i))); got != want {
			t.Fatalf("client %d: lease %s, want %s", i, got, want)
		}
	}
	if s.Leases() != 16 {
		t.Fatalf("%d leases, want 16", s.Leases())
	}
	disc, _ := dhcpv4.NewDiscovery(macN(16))
	if r := s.answer(disc, netip.Addr{}); r != nil {
		t.Fatalf("a 17th client got a %s of %s", typeOf(r), r.msg.YourIPAddr)
	}
	// Each client renews its own address.
	for i := 0; i < 16; i++ {
		if got := lease(t, s, macN(byte(i))); got != netip.AddrFrom4([4]byte{10, 0, 2, byte(15 + i)}) {
			t.Fatalf("client %d renewed into %s", i, got)
		}
	}
	*now = now.Add(DHCPLeaseTime + time.Minute)
	if s.Leases() != 0 {
		t.Fatalf("%d leases after they expired", s.Leases())
	}
	if got := lease(t, s, macN(16)); got.String() != "10.0.2.15" {
		t.Fatalf("after the leases expired the 17th client got %s, want 10.0.2.15", got)
	}
	disc, _ = dhcpv4.NewDiscovery(macN(3))
	if r := s.answer(disc, netip.Addr{}); addr4(r.msg.YourIPAddr).String() != "10.0.2.18" {
		t.Fatalf("an expired client came back to %s, want its 10.0.2.18", r.msg.YourIPAddr)
	} else if r.msg.Options.Has(dhcpv4.OptionDomainNameServer) {
		t.Fatalf("a DNS option from a plan without DNS: %v", r.msg.DNS())
	}

	cfg := Config{
		NSPrefixes: []netip.Prefix{netip.MustParsePrefix("10.0.2.20/24")}, NSAddrs: []netip.Addr{netip.MustParseAddr("10.0.2.20")},
		Gateway4: netip.MustParseAddr("10.0.2.15"), DNSAddrs: []netip.Addr{netip.MustParseAddr("10.0.2.16")},
	}
	s2 := newDHCPServer(&cfg, func(a netip.Addr) bool { return a.String() == "10.0.2.17" }, t.Logf)
	var got []string
	for i := byte(0); i < 3; i++ {
		got = append(got, lease(t, s2, macN(i)).String())
	}
	if want := []string{"10.0.2.18", "10.0.2.19", "10.0.2.21"}; !slices.Equal(got, want) {
		t.Fatalf("with the plan's addresses at .15, .16, .20 and the stack's at .17: leases %v, want %v", got, want)
	}
	if newDHCPServer(&Config{NSPrefixes: cfg.NSPrefixes, Gateway4: cfg.Gateway4, NoDHCP: true}, nil, t.Logf) != nil {
		t.Fatal("a server with NoDHCP")
	}
	if newDHCPServer(&Config{NSPrefixes: []netip.Prefix{netip.MustParsePrefix("fd00::100/64")}, Gateway4: cfg.Gateway4}, nil, t.Logf) != nil {
		t.Fatal("a server without an IPv4 network")
	}
}

// TestDHCPNoAckUntilLetThrough: while the address cannot be let through
// the source filter (the daemon's host is not up yet), a REQUEST gets no
// ACK; the client's next one does.
func TestDHCPNoAckUntilLetThrough(t *testing.T) {
	fail := true
	cfg := Config{
		NSPrefixes: []netip.Prefix{netip.MustParsePrefix("10.0.2.100/24")}, Gateway4: netip.MustParseAddr("10.0.2.2"),
		AddGuest: func(netip.Addr) error {
			if fail {
				return errors.New("the host is not up yet")
			}
			return nil
		},
	}
	s := newDHCPServer(&cfg, nil, t.Logf)
	disc, _ := dhcpv4.NewDiscovery(macN(1))
	offer := s.answer(disc, netip.Addr{})
	req, _ := dhcpv4.NewRequestFromOffer(offer.msg)
	if r := s.answer(req, netip.Addr{}); r != nil {
		t.Fatalf("a %s while the address cannot be let through", typeOf(r))
	}
	if s.Leases() != 0 {
		t.Fatalf("%d leases counted", s.Leases())
	}
	fail = false
	if r := s.answer(req, netip.Addr{}); typeOf(r) != "ACK" || r.msg.YourIPAddr.String() != "10.0.2.15" {
		t.Fatalf("the retried REQUEST got a %s", typeOf(r))
	}
}
