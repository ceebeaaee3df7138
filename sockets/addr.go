package sockets

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"github.com/tapstack/tapstack/stack"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Addr is a socket address: Python's (host, port) tuple for AF_INET, and
// (host, port, flowinfo, scope_id) for AF_INET6. It implements net.Addr.
//
// Host is a numeric IP address of the socket's family or a special string:
//
//	"", "0.0.0.0"                     every IPv4 interface of this stack (INADDR_ANY)
//	"::"                              every interface, IPv6 (and IPv4 unless IPV6_V6ONLY)
//	"<broadcast>", "255.255.255.255"  every host on the local segment (needs SO_BROADCAST)
//	"127.0.0.1", "::1"                this stack's loopback; never leaves the stack
//
// An IPv6 host may carry a zone: "fe80::1%tap0" or "fe80::1%2" (the NIC's
// name or ID); ScopeID does the same. Host names are refused: resolve them
// with GetAddrInfo. Port 0 asks for an ephemeral port.
type Addr struct {
	Host     string
	Port     int
	FlowInfo uint32
	ScopeID  uint32
}

// Network implements net.Addr.
func (a Addr) Network() string { return "ip" }

// String implements net.Addr: "10.0.2.2:7", "[fd00::2]:7", "[fe80::1%2]:7".
func (a Addr) String() string {
	h := a.Host
	if strings.Contains(h, ":") {
		if a.ScopeID != 0 && !strings.Contains(h, "%") {
			h += "%" + strconv.Itoa(int(a.ScopeID))
		}
		return "[" + h + "]:" + strconv.Itoa(a.Port)
	}
	return h + ":" + strconv.Itoa(a.Port)
}

// IP returns the host as a netip.Addr (with its zone), if it is numeric.
func (a Addr) IP() (netip.Addr, error) {
	ip, err := netip.ParseAddr(a.Host)
	if err != nil {
		return netip.Addr{}, err
	}
	return ip, nil
}

// AddrPort returns the address as a netip.AddrPort (zone dropped).
func (a Addr) AddrPort() (netip.AddrPort, error) {
	ip, err := a.IP()
	if err != nil {
		return netip.AddrPort{}, err
	}
	if a.Port < 0 || a.Port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("port %d out of range 0-65535", a.Port)
	}
	return netip.AddrPortFrom(ip.WithZone(""), uint16(a.Port)), nil
}

// AddrFrom returns the Addr of a netip.AddrPort.
func AddrFrom(ap netip.AddrPort) Addr {
	return Addr{Host: ap.Addr().String(), Port: int(ap.Port())}
}

// addrUse says what an address is parsed for; it decides what the empty
// host and the wildcard mean.
type addrUse int

const (
	useBind addrUse = iota
	useRemote
)

// parseAddr turns a user's Addr into gVisor's, for a socket of family f.
func parseAddr(st *stack.Stack, f Family, a Addr, use addrUse) (tcpip.FullAddress, error) {
	if a.Port < 0 || a.Port > 65535 {
		return tcpip.FullAddress{}, errnoErr(syscall.EINVAL, fmt.Sprintf("port %d out of range 0-65535", a.Port))
	}
	fa := tcpip.FullAddress{Port: uint16(a.Port)}
	host := a.Host
	switch {
	case host == "" || (host == "0.0.0.0" && f == AF_INET) || (host == "::" && f == AF_INET6):
		if use == useRemote {
			// Linux connects to the wildcard as to loopback.
			if f == AF_INET {
				fa.Addr = tcpip.AddrFrom4([4]byte{127, 0, 0, 1})
			} else {
				fa.Addr = tcpip.AddrFrom16(netip.IPv6Loopback().As16())
			}
		}
		return fa, nil
	case host == "<broadcast>":
		host = "255.255.255.255"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fa, &Error{Errno: syscall.EINVAL, Msg: fmt.Sprintf("%q is not a numeric IP address: %v", a.Host, ErrNeedResolve), Cause: ErrNeedResolve}
	}
	if strings.HasPrefix(host, "<") {
		return fa, errnoErr(syscall.EINVAL, fmt.Sprintf("unknown special host %q", a.Host))
	}
	zone := ip.Zone()
	ip = ip.WithZone("")
	switch f {
	case AF_INET:
		if !ip.Is4() {
			return fa, errnoErr(syscall.EAFNOSUPPORT, fmt.Sprintf("%s is not an IPv4 address (this is an AF_INET socket)", a.Host))
		}
		fa.Addr = tcpip.AddrFrom4(ip.As4())
		return fa, nil
	case AF_INET6:
		if ip.Is4() {
			return fa, errnoErr(syscall.EAFNOSUPPORT, fmt.Sprintf("%s is an IPv4 address on an AF_INET6 socket: write it as ::ffff:%s", a.Host, a.Host))
		}
		fa.Addr = tcpip.AddrFrom16(ip.As16())
		nic, err := scopeNIC(st, zone, a.ScopeID)
		if err != nil {
			return fa, err
		}
		if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() {
			if nic == 0 && (use == useRemote || use == useBind) {
				return fa, errnoErr(syscall.EINVAL, fmt.Sprintf("invalid argument: link-local address %s needs a scope ID (%s%%IFNAME)", ip, ip))
			}
			fa.NIC = nic
		}
		return fa, nil
	}
	return fa, errnoErr(syscall.EAFNOSUPPORT, fmt.Sprintf("address family %v not supported", f))
}

// scopeNIC resolves an IPv6 zone ("tap0" or "2") or scope ID to a NIC ID.
func scopeNIC(st *stack.Stack, zone string, scope uint32) (tcpip.NICID, error) {
	if zone != "" {
		if n, ok := st.NICByName(zone); ok {
			return n.ID, nil
		}
		id, err := strconv.ParseUint(zone, 10, 32)
		if err != nil {
			return 0, errnoErr(syscall.ENODEV, fmt.Sprintf("no such device: scope %q is not a NIC of this stack", zone))
		}
		scope = uint32(id)
	}
	if scope == 0 {
		return 0, nil
	}
	if _, ok := st.NICByID(tcpip.NICID(scope)); !ok {
		return 0, errnoErr(syscall.ENODEV, fmt.Sprintf("no such device: scope ID %d is not a NIC of this stack", scope))
	}
	return tcpip.NICID(scope), nil
}

// fromFull turns gVisor's address into an Addr for a socket of family f.
func fromFull(f Family, fa tcpip.FullAddress) Addr {
	a := Addr{Port: int(fa.Port)}
	switch fa.Addr.Len() {
	case 0:
		if f == AF_INET6 {
			a.Host = "::"
		} else {
			a.Host = "0.0.0.0"
		}
	case 4:
		ip := netip.AddrFrom4(fa.Addr.As4())
		if f == AF_INET6 {
			a.Host = netip.AddrFrom16(netip.AddrFrom4(fa.Addr.As4()).As16()).String()
		} else {
			a.Host = ip.String()
		}
	case 16:
		ip := netip.AddrFrom16(fa.Addr.As16())
		if f == AF_INET && ip.Is4In6() {
			ip = ip.Unmap()
		}
		a.Host = ip.String()
		if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() {
			a.ScopeID = uint32(fa.NIC)
		}
	}
	return a
}

// isV4Mapped reports whether a is an IPv4-mapped IPv6 address.
func isV4Mapped(a tcpip.Address) bool {
	return a.Len() == 16 && header.IsV4MappedAddress(a)
}

func nicID(scope uint32) tcpip.NICID { return tcpip.NICID(scope) }
