package relay

import (
	"net/netip"
	"strings"
)

// metadata is the cloud metadata range, refused unless allowed.
var (
	metadata4  = netip.MustParsePrefix("169.254.0.0/16")
	linkLocal6 = netip.MustParsePrefix("fe80::/10")
)

// verdict is what the policy says of a destination.
type verdict struct {
	ok     bool
	dial   netip.AddrPort // where to dial on the host
	reason string         // why not, when !ok
	// netUnreach answers a refusal with ICMP network unreachable rather
	// than as a closed port: slirp4netns's answer for the host loopback
	// address when --disable-host-loopback is given.
	netUnreach bool
	// silent drops the flow without an answer (Config.Silent).
	silent bool
}

// decide applies the egress policy to a destination the namespace asked
// for. isLocal tells whether an address is the stack's own.
func (g *Gateway) decide(dst netip.AddrPort, isLocal func(netip.Addr) bool) verdict {
	a := dst.Addr().Unmap()
	dst = netip.AddrPortFrom(a, dst.Port())
	for _, s := range g.cfg.Silent {
		if s == a {
			return verdict{reason: "dropped without an answer (the DNS address under --disable-dns)", silent: true}
		}
	}
	for _, m := range g.cfg.MapToHost {
		if m == a {
			return verdict{ok: true, dial: netip.AddrPortFrom(loopbackOf(a), dst.Port())}
		}
	}
	if isLocal(a) {
		if g.cfg.HostLoopback {
			for _, m := range g.cfg.LoopbackAddrs {
				if m == a {
					return verdict{ok: true, dial: netip.AddrPortFrom(loopbackOf(a), dst.Port())}
				}
			}
		}
		return verdict{reason: "the stack's own address (host loopback is off; see --host-loopback)", netUnreach: true}
	}
	switch {
	case a.IsLoopback():
		return verdict{reason: "host loopback (see --host-loopback)"}
	case a.IsUnspecified(), a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return verdict{reason: "not a unicast address"}
	case !g.cfg.AllowLinkLocal && (metadata4.Contains(a) || linkLocal6.Contains(a)):
		return verdict{reason: "link-local (cloud metadata) range, refused unless --allow-link-local"}
	}
	for _, p := range g.cfg.Deny {
		if p.Contains(a) {
			return verdict{reason: "denied by --deny " + p.String()}
		}
	}
	if len(g.cfg.Allow) > 0 {
		allowed := false
		for _, p := range g.cfg.Allow {
			if p.Contains(a) {
				allowed = true
				break
			}
		}
		if !allowed {
			return verdict{reason: "not in any --allow range"}
		}
	}
	return verdict{ok: true, dial: dst}
}

// loopbackOf is the host's loopback address of a's family.
func loopbackOf(a netip.Addr) netip.Addr {
	if a.Is6() {
		return netip.IPv6Loopback()
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// refused counts a refusal and logs it once per destination address.
func (g *Gateway) refused(proto string, dst netip.AddrPort, reason string) {
	g.stats.refused.Add(1)
	key := proto + " " + dst.Addr().String()
	switch log, full := g.logs.firstRefusal(key); {
	case log:
		g.logf("refused %s to %s: %s (logged once per destination)", proto, dst.Addr(), reason)
	case full:
		g.limitLog("refusals", "refused %s to %s: %s (%d destinations logged; further ones are counted only)", proto, dst.Addr(), reason, maxRefusalKeys)
	}
}

// ParsePrefixes parses a comma-separated list of CIDRs or addresses.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, err
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
