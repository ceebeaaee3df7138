package pastacli

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/stack/nshost"
)

// DaemonConfig turns the options into a daemon's configuration, with
// pasta's defaults where they differ from tapstack's; enter says whether
// the daemon can enter the namespace (root, or root of its user
// namespace), which -T and -U auto need.
func (o *Options) DaemonConfig(log *slog.Logger, enter bool) (daemon.Config, error) {
	cfg := daemon.Config{
		PID: o.PID, NetnsPath: o.NetnsPath, QuitWithNetnsPath: !o.NoNetnsQuit, TAP: o.Ifname, MTU: o.MTU, NoConfigure: !o.ConfigNet, Log: log,
		Relay: relay.Config{
			// pasta maps the gateway to the host's loopback unless
			// --no-map-gw; its other mappings stand for the host too.
			HostLoopback: !o.NoMapGW, MapToHost: append(append([]netip.Addr(nil), o.MapHostLoopback...), o.MapGuestAddr...),
			NoDHCP: o.NoDHCP, NoRA: o.NoRA || o.NoNDP,
		},
	}
	if cfg.TAP == "" {
		cfg.TAP = nshost.DefaultTAP
	}
	if o.PID != 0 && o.NetnsPath == "" {
		cfg.NetnsPath = ""
	}
	plan, err := o.plan()
	if err != nil {
		return daemon.Config{}, err
	}
	cfg.Plan = plan
	cfg.Relay.OutboundAddrs = append(cfg.Relay.OutboundAddrs, o.Outbound...)
	if o.Interface != "" {
		for _, v4 := range []bool{true, false} {
			if a, err := relay.OutboundAddr(o.Interface, v4); err == nil {
				cfg.Relay.OutboundAddrs = append(cfg.Relay.OutboundAddrs, a)
			}
		}
	}
	// Port forwards: explicit ones now, automatic ones by the daemon.
	for _, p := range []struct {
		proto string
		ports Ports
		auto  *bool
		skip  *[]uint16
	}{{"tcp", o.TCP, &cfg.AutoForwardTCP, &cfg.AutoForwardSkipTCP}, {"udp", o.UDP, &cfg.AutoForwardUDP, &cfg.AutoForwardSkipUDP}} {
		switch {
		case !p.ports.Set || p.ports.Mode == "auto":
			*p.auto = true // pasta's default
		case p.ports.Mode == "none":
		case onlyExclusions(p.ports.Specs):
			// Every port but these: tapstack forwards every port the
			// namespace listens on but these (pasta binds them all).
			*p.auto = true
			for _, s := range p.ports.Specs {
				for port := int(s.First); port <= int(s.Last); port++ {
					*p.skip = append(*p.skip, uint16(port))
				}
			}
		default:
			fwds, err := forwards(p.proto, p.ports.Specs, plan)
			if err != nil {
				return daemon.Config{}, err
			}
			cfg.Relay.Forwards = append(cfg.Relay.Forwards, fwds...)
		}
	}
	// The other way (-T, -U): pasta's default is auto, which needs a
	// namespace the daemon can enter; handed a TAP (without root) it is
	// none.
	for _, p := range []struct {
		proto string
		ports Ports
		auto  *bool
	}{{"tcp", o.TCPNS, &cfg.AutoNSForwardTCP}, {"udp", o.UDPNS, &cfg.AutoNSForwardUDP}} {
		switch {
		case !p.ports.Set:
			*p.auto = enter
		case p.ports.Mode == "auto":
			*p.auto = true
		case p.ports.Mode == "none":
		default:
			if onlyExclusions(p.ports.Specs) {
				return daemon.Config{}, fmt.Errorf("-T/-U ~%d: every port but some, from the namespace, is %w (use auto)", p.ports.Specs[0].First, ErrUnsupported)
			}
			excluded := excludedPorts(p.ports.Specs)
			for _, s := range p.ports.Specs {
				if s.Exclude {
					continue
				}
				for port := int(s.First); port <= int(s.Last); port++ {
					if excluded[uint16(port)] {
						continue
					}
					cfg.NSForwards = append(cfg.NSForwards, daemon.NSForward{Proto: p.proto, NSPort: uint16(port),
						HostPort: s.Target + uint16(port-int(s.First))})
				}
			}
		}
	}
	return cfg, nil
}

// forwards are the relay's forwards of explicit -t/-u specs: each
// port of a range, to the namespace's port of the same offset; without
// an address, on the host's 0.0.0.0 and [::] (IPv6 only) for the
// families the namespace has.
func forwards(proto string, specs []PortSpec, plan nshost.Plan) ([]relay.Forward, error) {
	var out []relay.Forward
	excluded := excludedPorts(specs)
	for _, s := range specs {
		if s.Exclude {
			continue
		}
		hosts := []netip.Addr{s.Addr}
		if !s.Addr.IsValid() {
			hosts = nil
			for _, p := range plan.NS {
				if p.Addr().Is4() {
					hosts = append(hosts, netip.IPv4Unspecified())
				} else {
					hosts = append(hosts, netip.IPv6Unspecified())
				}
			}
		}
		for port := int(s.First); port <= int(s.Last); port++ {
			if excluded[uint16(port)] {
				continue
			}
			for _, h := range hosts {
				out = append(out, relay.Forward{Proto: proto, Host: netip.AddrPortFrom(h, uint16(port)),
					NSPort: s.Target + uint16(port-int(s.First)), V6Only: h == netip.IPv6Unspecified(), Iface: s.Iface})
			}
		}
	}
	return out, nil
}

// onlyExclusions says whether specs are ~PORT items alone (every other
// port).
func onlyExclusions(specs []PortSpec) bool {
	for _, s := range specs {
		if !s.Exclude {
			return false
		}
	}
	return len(specs) > 0
}

// excludedPorts are the ports of specs' ~PORT items.
func excludedPorts(specs []PortSpec) map[uint16]bool {
	m := map[uint16]bool{}
	for _, s := range specs {
		for port := int(s.First); s.Exclude && port <= int(s.Last); port++ {
			m[uint16(port)] = true
		}
	}
	return m
}

// plan is the namespace's address plan: -a, -n, -g, --dns-forward
// and -D where given; otherwise the host's own address, prefix and
// gateway (of the interface of its default route), as pasta copies
// them; otherwise, on a host without a default route, tapstack's plan.
func (o *Options) plan() (nshost.Plan, error) {
	var plan nshost.Plan
	def := nshost.DefaultPlan()
	for _, fam := range []struct {
		v4     bool
		addr   netip.Addr
		gw     netip.Addr
		dns    []netip.Addr
		skip   bool
		bits   int
		defNet int // index in the default plan
	}{{v4: true, addr: o.Addr4, gw: o.Gateway4, skip: o.IPv6Only, bits: o.Prefix4, defNet: 0},
		{v4: false, addr: o.Addr6, gw: o.Gateway6, skip: o.IPv4Only, bits: 64, defNet: 1}} {
		if fam.skip {
			continue
		}
		var ns, stack netip.Prefix
		if fam.addr.IsValid() {
			bits := fam.bits
			if bits == 0 {
				bits = 24
				if !fam.v4 {
					bits = 64
				}
			}
			ns = netip.PrefixFrom(fam.addr, bits)
		} else if hostNS, hostGW, ok := hostTemplate(fam.v4); ok {
			ns, fam.gw = hostNS, hostGW
		} else {
			ns, stack = def.NS[fam.defNet], def.Stack[fam.defNet]
		}
		if !stack.IsValid() {
			gw := fam.gw
			if !gw.IsValid() {
				gw = ns.Masked().Addr().Next()
				if gw == ns.Addr() {
					gw = gw.Next()
				}
			}
			stack = netip.PrefixFrom(gw, ns.Bits())
			if !ns.Masked().Contains(gw) && !gw.IsLinkLocalUnicast() {
				return nshost.Plan{}, fmt.Errorf("gateway %s is not in the namespace's network %s", gw, ns.Masked())
			}
		}
		plan.NS = append(plan.NS, ns)
		plan.Stack = append(plan.Stack, stack)
	}
	if len(plan.NS) == 0 {
		return nshost.Plan{}, errors.New("no address family left")
	}
	if !o.NoDNS {
		for _, a := range append(append([]netip.Addr(nil), o.DNSForward...), o.DNS...) {
			if (a.Is4() && !o.IPv6Only) || (a.Is6() && !o.IPv4Only) {
				plan.DNS = append(plan.DNS, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	return plan, nil
}

// hostTemplate is the host's address and default gateway of a family on
// the interface of its default route, as pasta copies them.
func hostTemplate(v4 bool) (netip.Prefix, netip.Addr, bool) {
	family := netlink.FAMILY_V6
	if v4 {
		family = netlink.FAMILY_V4
	}
	routes, err := netlink.RouteList(nil, family)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, false
	}
	for _, r := range routes {
		if (r.Dst != nil && r.Dst.IP != nil && !r.Dst.IP.IsUnspecified()) || r.Gw == nil || r.LinkIndex == 0 {
			continue
		}
		gw, ok := netip.AddrFromSlice(r.Gw)
		if !ok {
			continue
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		addrs, _ := netlink.AddrList(l, family)
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || !ip.Unmap().IsGlobalUnicast() {
				continue
			}
			bits, _ := a.Mask.Size()
			return netip.PrefixFrom(ip.Unmap(), bits), gw.Unmap(), true
		}
	}
	return netip.Prefix{}, netip.Addr{}, false
}
