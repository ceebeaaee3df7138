package lab

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"

	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeProto marks the routes a network installs (RTPROT_*: a number
// iproute2 does not name), so that a refresh finds and replaces its own
// routes only.
const routeProto = vnl.RouteProtocol(77)

// newSegment makes a segment with the subnets given, or automatic ones:
// 10.77.<k>.0/24 and fd77:<k>::/64 with k the preferred index if free,
// else the first free one. A switch's segment is registered at once; a
// link's, by the caller once the link is made.
func (n *Network) newSegment(k int, s4, s6 netip.Prefix, noIPv6 bool) (*segment, error) {
	seg := &segment{sub4: s4.Masked(), sub6: s6.Masked(), noIPv6: noIPv6}
	if s4.IsValid() && !s4.Addr().Is4() {
		return nil, fmt.Errorf("Subnet4 %s is not IPv4", s4)
	}
	if s6.IsValid() && !s6.Addr().Is6() {
		return nil, fmt.Errorf("Subnet6 %s is not IPv6", s6)
	}
	if !seg.sub4.IsValid() || (!seg.sub6.IsValid() && !noIPv6) {
		auto := func(i int) (netip.Prefix, netip.Prefix) {
			return netip.MustParsePrefix("10.77." + strconv.Itoa(i) + ".0/24"), netip.MustParsePrefix("fd77:" + strconv.Itoa(i) + "::/64")
		}
		free := func(i int) bool {
			a4, a6 := auto(i)
			return !n.subnetUsed(a4) && !n.subnetUsed(a6)
		}
		i := k
		if i < 1 || i > 255 || !free(i) {
			for i = 1; i <= 255 && !free(i); i++ {
			}
		}
		if i > 255 {
			return nil, errors.New("no free subnet left in 10.77.0.0/16: give LinkOptions.Subnet4 and Subnet6")
		}
		a4, a6 := auto(i)
		if !seg.sub4.IsValid() {
			seg.sub4 = a4
		}
		if !seg.sub6.IsValid() && !noIPv6 {
			seg.sub6 = a6
		}
	}
	if k == 0 { // a switch's
		n.segs = append(n.segs, seg)
	}
	return seg, nil
}

// subnetUsed says whether p overlaps a subnet or address of the network.
func (n *Network) subnetUsed(p netip.Prefix) bool {
	for _, s := range n.allSegs() {
		for _, q := range []netip.Prefix{s.sub4, s.sub6} {
			if q.IsValid() && q.Overlaps(p) {
				return true
			}
		}
		for _, pt := range s.ports {
			for _, a := range pt.addrs {
				if a.Masked().Overlaps(p) {
					return true
				}
			}
		}
	}
	return false
}

// allocate picks a node's addresses in the segment: the lowest free host
// number of each subnet that neither the segment's ports nor taken hold.
func (s *segment) allocate(noIPv6 bool, taken []netip.Prefix) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, sub := range []netip.Prefix{s.sub4, s.sub6} {
		if !sub.IsValid() || (sub.Addr().Is6() && (noIPv6 || s.noIPv6)) {
			continue
		}
		a, err := s.freeHost(sub, taken)
		if err != nil {
			return nil, err
		}
		out = append(out, netip.PrefixFrom(a, sub.Bits()))
	}
	return out, nil
}

func (s *segment) freeHost(sub netip.Prefix, taken []netip.Prefix) (netip.Addr, error) {
	used := map[netip.Addr]bool{}
	for _, a := range taken {
		used[a.Addr()] = true
	}
	for _, p := range s.ports {
		for _, a := range p.addrs {
			used[a.Addr()] = true
		}
	}
	base := new(big.Int).SetBytes(sub.Addr().AsSlice())
	for h := int64(1); h < 1<<16; h++ {
		b := new(big.Int).Add(base, big.NewInt(h)).FillBytes(make([]byte, sub.Addr().BitLen()/8))
		a, _ := netip.AddrFromSlice(b)
		if !sub.Contains(a) || (a.Is4() && a == lastAddr(sub)) {
			break
		}
		if !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("subnet %s is full", sub)
}

// lastAddr is the highest address of p (IPv4's broadcast).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// route is a static route: dst through gw on the interface ifindex.
type route struct {
	dst     netip.Prefix
	gw      netip.Addr
	ifindex int
}

// refreshLocked brings every node's routes, hosts file and resolv.conf up
// to date with the topology.
func (n *Network) refreshLocked() error {
	var errs []error
	for _, nd := range n.nodes {
		if nd.kind == Switch {
			continue
		}
		want := n.routesFor(nd)
		if err := nd.installRoutes(want); err != nil {
			errs = append(errs, fmt.Errorf("routes of %s: %w", nd.name, err))
		}
	}
	hosts := n.hostsFile()
	for _, nd := range n.nodes {
		if nd.etc == "" {
			continue
		}
		if err := writeIfChanged(filepath.Join(nd.etc, "hosts"), hosts); err != nil {
			errs = append(errs, err)
		}
		if nd.kind == Switch {
			continue
		}
		u := nd.uplink
		if u == nil {
			u = n.uplinkFor(nd)
		}
		if u != nil {
			if err := writeIfChanged(filepath.Join(nd.etc, "resolv.conf"), []byte(u.resolv)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// hop is how a node reaches another: through gw on its interface ifindex,
// dist segments away.
type hop struct {
	gw      netip.Addr
	ifindex int
	dist    int
}

// reach finds, for one family, the first hop from src to every node it
// reaches through forwarding nodes, breadth first (in the order of the
// segments and ports, so that ties always break the same way).
func (n *Network) reach(src *Node, v4 bool) (map[*Node]hop, []*Node) {
	hops := map[*Node]hop{src: {}}
	order := []*Node{src}
	for i := 0; i < len(order); i++ {
		u := order[i]
		if u != src && !u.forward {
			continue
		}
		for _, s := range n.allSegs() {
			from := s.portOf(u)
			if from == nil || !from.has(v4) {
				continue
			}
			for _, q := range s.ports {
				if _, seen := hops[q.node]; seen || !q.has(v4) {
					continue
				}
				h := hops[u]
				h.dist++
				if u == src {
					h.gw, h.ifindex = q.first(v4), from.ifindex
				}
				hops[q.node] = h
				order = append(order, q.node)
			}
		}
	}
	return hops, order
}

// allSegs is every segment in order: the switches' and the links'.
func (n *Network) allSegs() []*segment {
	out := append([]*segment(nil), n.segs...)
	for _, l := range n.links {
		if l.seg != nil && l.a.node.kind != Switch && l.b.node.kind != Switch {
			out = append(out, l.seg)
		}
	}
	return out
}

func (s *segment) portOf(nd *Node) *port {
	for _, p := range s.ports {
		if p.node == nd {
			return p
		}
	}
	return nil
}

func (p *port) has(v4 bool) bool { return p.first(v4).IsValid() }

func (p *port) first(v4 bool) netip.Addr {
	for _, a := range p.addrs {
		if a.Addr().Is4() == v4 {
			return a.Addr()
		}
	}
	return netip.Addr{}
}

// routesFor computes nd's routes: to every subnet it is not on, through
// the nearest forwarding node on that subnet; and a default route towards
// the nearest uplinked node, unless it has an uplink itself.
func (n *Network) routesFor(nd *Node) []route {
	var out []route
	for _, v4 := range []bool{true, false} {
		hops, order := n.reach(nd, v4)
		own := map[netip.Prefix]bool{}
		for _, a := range nd.addrsLocked() {
			own[a.Masked()] = true
		}
		done := map[netip.Prefix]bool{}
		for _, s := range n.allSegs() {
			for _, sub := range s.subnets(v4) {
				if own[sub] || done[sub] {
					continue
				}
				// The nearest forwarder with a port on s.
				for _, t := range order {
					if t == nd || !t.forward || s.portOf(t) == nil || !s.portOf(t).has(v4) {
						continue
					}
					h := hops[t]
					out = append(out, route{dst: sub, gw: h.gw, ifindex: h.ifindex})
					done[sub] = true
					break
				}
			}
		}
		if nd.uplink != nil {
			continue
		}
		for _, t := range order {
			if t != nd && t.uplink != nil {
				h := hops[t]
				dst := netip.MustParsePrefix("0.0.0.0/0")
				if !v4 {
					dst = netip.MustParsePrefix("::/0")
				}
				out = append(out, route{dst: dst, gw: h.gw, ifindex: h.ifindex})
				break
			}
		}
	}
	return out
}

// subnets are the networks of the segment's addresses of one family.
func (s *segment) subnets(v4 bool) []netip.Prefix {
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	for _, p := range s.ports {
		for _, a := range p.addrs {
			if m := a.Masked(); a.Addr().Is4() == v4 && !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	return out
}

// uplinkFor is the uplink nd's default route leads to, if any.
func (n *Network) uplinkFor(nd *Node) *Uplink {
	for _, v4 := range []bool{true, false} {
		_, order := n.reach(nd, v4)
		for _, t := range order {
			if t.uplink != nil {
				return t.uplink
			}
		}
	}
	return nil
}

// installRoutes makes nd's routes of the network exactly want.
func (nd *Node) installRoutes(want []route) error {
	have, err := nd.nh.RouteListFiltered(unix.AF_UNSPEC, &vnl.Route{Protocol: routeProto}, vnl.RT_FILTER_PROTOCOL)
	if err != nil {
		return err
	}
	key := func(dst netip.Prefix) string { return dst.String() }
	wanted := map[string]bool{}
	for _, r := range want {
		wanted[key(r.dst)] = true
	}
	var errs []error
	for _, r := range have {
		dst := netip.MustParsePrefix("0.0.0.0/0")
		if r.Family == unix.AF_INET6 {
			dst = netip.MustParsePrefix("::/0")
		}
		if r.Dst != nil {
			if p, ok := prefixOf(r.Dst); ok {
				dst = p
			}
		}
		if !wanted[key(dst)] {
			if err := nd.nh.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route to %s: %w", dst, err))
			}
		}
	}
	for _, r := range want {
		family := unix.AF_INET
		if r.dst.Addr().Is6() {
			family = unix.AF_INET6
		}
		nr := &vnl.Route{Family: family, Dst: ipNet(r.dst), Gw: net.IP(r.gw.AsSlice()), LinkIndex: r.ifindex, Protocol: routeProto}
		if err := nd.nh.RouteReplace(nr); err != nil {
			errs = append(errs, fmt.Errorf("route to %s via %s: %w", r.dst, r.gw, err))
		}
	}
	return errors.Join(errs...)
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

// hostsFile is the hosts file of every node: the loopback names, then
// each node's name (and <name>.<network name>) with its first address of
// each family.
func (n *Network) hostsFile() []byte {
	var b bytes.Buffer
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	for _, nd := range n.nodes {
		if nd.kind == Switch {
			continue
		}
		for _, v4 := range []bool{true, false} {
			if a := nd.firstAddrLocked(v4); a.IsValid() {
				fmt.Fprintf(&b, "%s\t%s %s.%s\n", a, nd.name, nd.name, n.name)
			}
		}
	}
	return b.Bytes()
}

// writeIfChanged writes data to path unless it holds it already.
func writeIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return os.WriteFile(path, data, 0o644)
}
