package nshost

import (
	"fmt"
	"net/netip"
	"strings"
)

// Plan is a namespace's address plan, slirp4netns's: on each network the
// stack (the namespace's gateway, and the host's loopback when that is
// asked for) at .2 (::2), the DNS forwarder at .3 (::3), the namespace at
// .100 (::100). Build one with PlanFor or DefaultPlan; the fields may
// then be changed one by one (--addr, --ns-addr, --disable-dns).
type Plan struct {
	// Stack are the stack's addresses; the first of each family is the
	// namespace's default gateway.
	Stack []netip.Prefix
	// NS are the namespace's addresses.
	NS []netip.Prefix
	// DNS are the DNS forwarder's addresses (none: no forwarder).
	DNS []netip.Prefix
}

// Networks of the default plan.
const (
	DefaultNetwork4 = "10.0.2.0/24"
	DefaultNetwork6 = "fd00::/64"
)

// DefaultPlan is the plan on 10.0.2.0/24 and fd00::/64: stack 10.0.2.2
// and fd00::2, DNS 10.0.2.3 and fd00::3, namespace 10.0.2.100 and
// fd00::100.
func DefaultPlan() Plan {
	p, err := PlanFor(netip.MustParsePrefix(DefaultNetwork4), netip.MustParsePrefix(DefaultNetwork6))
	if err != nil {
		panic(err) // the defaults are valid
	}
	return p
}

// PlanFor makes the plan on the networks given (either may be the zero
// Prefix: no such family). A network must be a network address (no host
// bits set) with room for .100: an IPv4 prefix of at most 25 bits, an
// IPv6 one of at most 112.
func PlanFor(v4, v6 netip.Prefix) (Plan, error) {
	var p Plan
	for _, n := range []struct {
		net     netip.Prefix
		is4     bool
		maxBits int
	}{{v4, true, 25}, {v6, false, 112}} {
		if !n.net.IsValid() {
			continue
		}
		if n.net.Addr().Is4() != n.is4 || n.net.Addr().Zone() != "" {
			return Plan{}, fmt.Errorf("%s: not an IPv%s network", n.net, map[bool]string{true: "4", false: "6"}[n.is4])
		}
		if n.net.Masked() != n.net {
			return Plan{}, fmt.Errorf("%s: want a network address like %s", n.net, n.net.Masked())
		}
		if n.net.Bits() > n.maxBits {
			return Plan{}, fmt.Errorf("%s: a prefix of %d bits or fewer leaves room for .100", n.net, n.maxBits)
		}
		// .100 in IPv4, ::100 (hexadecimal) in IPv6, as slirp4netns.
		ns := uint16(100)
		if !n.is4 {
			ns = 0x100
		}
		p.Stack = append(p.Stack, hostIn(n.net, 2))
		p.DNS = append(p.DNS, hostIn(n.net, 3))
		p.NS = append(p.NS, hostIn(n.net, ns))
	}
	if len(p.Stack) == 0 {
		return Plan{}, fmt.Errorf("an address plan needs a network")
	}
	return p, nil
}

// hostIn is the address n of network net, with the network's length.
func hostIn(net netip.Prefix, n uint16) netip.Prefix {
	b := net.Addr().AsSlice()
	v := uint16(b[len(b)-2])<<8 | uint16(b[len(b)-1]) + n
	b[len(b)-2], b[len(b)-1] = byte(v>>8), byte(v)
	a, _ := netip.AddrFromSlice(b)
	return netip.PrefixFrom(a, net.Bits())
}

// Gateways returns the namespace's default gateways: the first stack
// address of each family.
func (p Plan) Gateways() (gw4, gw6 netip.Addr) { return Gateways(p.Stack) }

// ResolvConf is the namespace's resolv.conf: a nameserver line per DNS
// address ("" for a plan without DNS).
func (p Plan) ResolvConf() string {
	var b strings.Builder
	for _, d := range p.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", d.Addr())
	}
	return b.String()
}

// Addrs returns the addresses of prefixes.
func Addrs(prefixes []netip.Prefix) []netip.Addr {
	out := make([]netip.Addr, 0, len(prefixes))
	for _, p := range prefixes {
		out = append(out, p.Addr())
	}
	return out
}
