package sockets

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"

	"github.com/tapstack/tapstack/stack"
)

// Flags for GetAddrInfo, Linux's values.
const (
	AI_PASSIVE     = 0x0001
	AI_CANONNAME   = 0x0002
	AI_NUMERICHOST = 0x0004
	AI_V4MAPPED    = 0x0008
	AI_ALL         = 0x0010
	AI_ADDRCONFIG  = 0x0020
	AI_NUMERICSERV = 0x0400
)

// GAIErrno is a getaddrinfo error code, glibc's negative numbers, as in
// Python's socket.gaierror. errors.Is(err, EAI_NONAME) matches a GAIError.
type GAIErrno int

// getaddrinfo error codes.
const (
	EAI_BADFLAGS   GAIErrno = -1
	EAI_NONAME     GAIErrno = -2
	EAI_AGAIN      GAIErrno = -3
	EAI_FAIL       GAIErrno = -4
	EAI_FAMILY     GAIErrno = -6
	EAI_SOCKTYPE   GAIErrno = -7
	EAI_SERVICE    GAIErrno = -8
	EAI_ADDRFAMILY GAIErrno = -9
)

var gaiNames = map[GAIErrno][2]string{
	EAI_BADFLAGS:   {"EAI_BADFLAGS", "Bad value for ai_flags"},
	EAI_NONAME:     {"EAI_NONAME", "Name or service not known"},
	EAI_AGAIN:      {"EAI_AGAIN", "Temporary failure in name resolution"},
	EAI_FAIL:       {"EAI_FAIL", "Non-recoverable failure in name resolution"},
	EAI_FAMILY:     {"EAI_FAMILY", "ai_family not supported"},
	EAI_SOCKTYPE:   {"EAI_SOCKTYPE", "ai_socktype not supported"},
	EAI_SERVICE:    {"EAI_SERVICE", "Servname not supported for ai_socktype"},
	EAI_ADDRFAMILY: {"EAI_ADDRFAMILY", "Address family for hostname not supported"},
}

// Name is the constant's name, such as "EAI_NONAME".
func (e GAIErrno) Name() string { return gaiNames[e][0] }

func (e GAIErrno) Error() string {
	if n, ok := gaiNames[e]; ok {
		return n[1]
	}
	return "getaddrinfo error " + strconv.Itoa(int(e))
}

// GAIError is GetAddrInfo's error: Python's socket.gaierror.
type GAIError struct {
	Code GAIErrno
	Host string
	// Detail says what happened, when there is more to say than the code.
	Detail string
}

func (e *GAIError) Error() string {
	s := fmt.Sprintf("getaddrinfo %q: [%s] %s", e.Host, e.Code.Name(), e.Code.Error())
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap returns the code, so errors.Is(err, EAI_NONAME) works.
func (e *GAIError) Unwrap() error { return e.Code }

// Timeout reports whether the lookup timed out, for net.Error.
func (e *GAIError) Timeout() bool { return e.Code == EAI_AGAIN }

// Temporary reports whether retrying may help, for net.Error.
func (e *GAIError) Temporary() bool { return e.Code == EAI_AGAIN }

// AddrInfo is one result of GetAddrInfo: Python's (family, type, proto,
// canonname, sockaddr) tuple.
type AddrInfo struct {
	Family    Family
	Type      Type
	Proto     int
	CanonName string
	Addr      Addr
}

// ResolverConfig is how GetAddrInfo resolves names on a stack. The zero
// value of each field is its default.
type ResolverConfig struct {
	// Servers are DNS servers reached over the stack, tried in order.
	// Port 0 means 53. None: only numeric hosts, localhost and Hosts.
	Servers []netip.AddrPort
	// Hosts is a static table, consulted before DNS. Keys are names
	// (case does not matter, no trailing dot).
	Hosts map[string][]netip.Addr
	// Search domains are appended to names without a trailing dot.
	Search []string
	// Timeout is how long one query waits for one server (2 s).
	Timeout time.Duration
	// Attempts is how many rounds over all servers a query makes (2).
	Attempts int
}

// resolverKey is the key of a stack's resolver settings in stack.Value.
type resolverKey struct{}

// resolverBox holds a stack's resolver settings.
type resolverBox struct {
	c atomic.Pointer[ResolverConfig]
}

func resolverBoxOf(st *stack.Stack) *resolverBox {
	return st.Value(resolverKey{}, func() any { return new(resolverBox) }).(*resolverBox)
}

// SetResolver sets how GetAddrInfo resolves names on st.
func SetResolver(st *stack.Stack, cfg ResolverConfig) error {
	c := cfg
	c.Servers = nil
	for _, s := range cfg.Servers {
		if !s.Addr().IsValid() {
			return fmt.Errorf("resolver: invalid server address %v", s)
		}
		if s.Port() == 0 {
			s = netip.AddrPortFrom(s.Addr(), 53)
		}
		c.Servers = append(c.Servers, s)
	}
	c.Hosts = map[string][]netip.Addr{}
	for name, addrs := range cfg.Hosts {
		c.Hosts[canonicalKey(name)] = append([]netip.Addr(nil), addrs...)
	}
	if c.Timeout < 0 || c.Attempts < 0 {
		return errors.New("resolver: negative timeout or attempts")
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	if c.Attempts == 0 {
		c.Attempts = 2
	}
	resolverBoxOf(st).c.Store(&c)
	return nil
}

func resolverOf(st *stack.Stack) *ResolverConfig {
	if c := resolverBoxOf(st).c.Load(); c != nil {
		return c
	}
	return &ResolverConfig{Timeout: 2 * time.Second, Attempts: 2}
}

func canonicalKey(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// GetAddrInfo translates a host and port into socket addresses: Python's
// socket.getaddrinfo(host, port, family, type, proto, flags).
//
// Numeric hosts pass straight through (AI_NUMERICHOST refuses anything
// else); "localhost" and the stack's static hosts table answer locally; any
// other name is resolved by a DNS client that runs over this stack (UDP to
// the configured servers, retry across servers, TCP when a reply is
// truncated). An empty host is the wildcard with AI_PASSIVE and loopback
// without. The port is, as in Python, an int, a string holding a number or
// a service name ("http"), or nil (and "") for none.
// family is AF_UNSPEC, AF_INET or AF_INET6; typ 0 gives SOCK_STREAM and
// SOCK_DGRAM entries. IPv6 results come first only when the stack has a
// route to them. Errors are *GAIError (EAI_NONAME, EAI_AGAIN, EAI_FAMILY,
// EAI_SERVICE …).
func GetAddrInfo(st *stack.Stack, host string, port any, family Family, typ Type, proto, flags int) ([]AddrInfo, error) {
	return GetAddrInfoContext(context.Background(), st, host, port, family, typ, proto, flags)
}

// GetAddrInfoContext is GetAddrInfo with a context that bounds the lookup.
func GetAddrInfoContext(ctx context.Context, st *stack.Stack, host string, portArg any, family Family, typ Type, proto, flags int) ([]AddrInfo, error) {
	gerr := func(code GAIErrno, detail string) error {
		return &GAIError{Code: code, Host: host, Detail: detail}
	}
	if flags&^(AI_PASSIVE|AI_CANONNAME|AI_NUMERICHOST|AI_V4MAPPED|AI_ALL|AI_ADDRCONFIG|AI_NUMERICSERV) != 0 {
		return nil, gerr(EAI_BADFLAGS, fmt.Sprintf("flags %#x", flags))
	}
	if family != AF_UNSPEC && family != AF_INET && family != AF_INET6 {
		return nil, gerr(EAI_FAMILY, fmt.Sprintf("family %v", family))
	}
	types := []Type{SOCK_STREAM, SOCK_DGRAM}
	switch typ {
	case 0:
		switch proto {
		case IPPROTO_TCP:
			types = types[:1]
		case IPPROTO_UDP:
			types = types[1:]
		}
	case SOCK_STREAM, SOCK_DGRAM:
		types = []Type{typ}
	default:
		return nil, gerr(EAI_SOCKTYPE, fmt.Sprintf("socket type %v", typ))
	}
	if proto != 0 && proto != IPPROTO_TCP && proto != IPPROTO_UDP {
		return nil, gerr(EAI_SERVICE, fmt.Sprintf("protocol %d", proto))
	}
	if typ == SOCK_STREAM && proto == IPPROTO_UDP || typ == SOCK_DGRAM && proto == IPPROTO_TCP {
		return nil, gerr(EAI_SERVICE, fmt.Sprintf("protocol %d does not go with %v", proto, typ))
	}
	var port string
	switch p := portArg.(type) {
	case nil:
	case string:
		port = p
	case int:
		if p < 0 || p > 65535 {
			return nil, gerr(EAI_SERVICE, fmt.Sprintf("port %d out of range 0-65535", p))
		}
		port = strconv.Itoa(p)
	case uint16:
		port = strconv.Itoa(int(p))
	default:
		return nil, gerr(EAI_SERVICE, fmt.Sprintf("port of type %T: want an int, a string or nil", portArg))
	}
	if host == "" && port == "" {
		return nil, gerr(EAI_NONAME, "host and port are both empty")
	}
	portNum, err := parseService(port, types[0], flags)
	if err != nil {
		return nil, &GAIError{Code: err.(GAIErrno), Host: host, Detail: fmt.Sprintf("service %q", port)}
	}

	var addrs []netip.Addr
	canon := host
	switch {
	case host == "":
		if flags&AI_PASSIVE != 0 {
			addrs = []netip.Addr{netip.IPv6Unspecified(), netip.IPv4Unspecified()}
		} else {
			addrs = []netip.Addr{netip.IPv6Loopback(), netip.MustParseAddr("127.0.0.1")}
		}
	default:
		if ip, perr := netip.ParseAddr(host); perr == nil {
			addrs = []netip.Addr{ip}
			break
		}
		if flags&AI_NUMERICHOST != 0 {
			return nil, gerr(EAI_NONAME, "AI_NUMERICHOST is set and the host is not numeric")
		}
		key := canonicalKey(host)
		if key == "localhost" || strings.HasSuffix(key, ".localhost") {
			addrs = []netip.Addr{netip.IPv6Loopback(), netip.MustParseAddr("127.0.0.1")}
			break
		}
		r := resolverOf(st)
		if h, ok := r.Hosts[key]; ok {
			addrs = h
			break
		}
		var code GAIErrno
		var detail string
		canon, addrs, code, detail = lookupDNS(ctx, st, r, host, family)
		if code != 0 {
			return nil, gerr(code, detail)
		}
	}

	// Filter by family, keeping the order.
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		switch {
		case a.Is4() || a.Is4In6() && family == AF_INET:
			v4 = append(v4, a.Unmap())
		case a.Is6():
			v6 = append(v6, a)
		}
	}
	switch family {
	case AF_INET:
		v6 = nil
	case AF_INET6:
		if flags&AI_V4MAPPED != 0 && (len(v6) == 0 || flags&AI_ALL != 0) {
			for _, a := range v4 {
				v6 = append(v6, netip.AddrFrom16(a.As16()))
			}
		}
		v4 = nil
	}
	if len(v4)+len(v6) == 0 {
		if len(addrs) > 0 {
			return nil, gerr(EAI_ADDRFAMILY, fmt.Sprintf("no %v address", family))
		}
		return nil, gerr(EAI_NONAME, "no address")
	}
	ordered := append(append([]netip.Addr{}, v4...), v6...)
	if len(v6) > 0 && (len(v4) == 0 || routable6(st, v6[0])) {
		ordered = append(append([]netip.Addr{}, v6...), v4...)
	}
	var out []AddrInfo
	for _, a := range ordered {
		f := AF_INET
		if a.Is6() {
			f = AF_INET6
		}
		for _, t := range types {
			p := IPPROTO_TCP
			if t == SOCK_DGRAM {
				p = IPPROTO_UDP
			}
			ai := AddrInfo{Family: f, Type: t, Proto: p, Addr: Addr{Host: a.WithZone("").String(), Port: portNum}}
			if z := a.Zone(); z != "" {
				if nic, err := scopeNIC(st, z, 0); err == nil {
					ai.Addr.ScopeID = uint32(nic)
				}
			}
			out = append(out, ai)
		}
	}
	if flags&AI_CANONNAME != 0 && len(out) > 0 {
		out[0].CanonName = strings.TrimSuffix(canon, ".")
	}
	return out, nil
}

// parseService turns a port or service name into a number.
func parseService(port string, t Type, flags int) (int, error) {
	if port == "" {
		return 0, nil
	}
	if n, err := strconv.Atoi(port); err == nil {
		if n < 0 || n > 65535 {
			return 0, EAI_SERVICE
		}
		return n, nil
	}
	if flags&AI_NUMERICSERV != 0 {
		return 0, EAI_NONAME
	}
	network := "tcp"
	if t == SOCK_DGRAM {
		network = "udp"
	}
	n, err := net.LookupPort(network, port) // /etc/services and Go's table; no network
	if err != nil {
		return 0, EAI_SERVICE
	}
	return n, nil
}

// routable6 reports whether the stack has a route to a (beyond loopback
// when a is not loopback).
func routable6(st *stack.Stack, a netip.Addr) bool {
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	r, err := st.GV().FindRoute(0, tcpip.Address{}, tcpip.AddrFrom16(a.As16()), ipv6.ProtocolNumber, false)
	if err != nil {
		return false
	}
	r.Release()
	return true
}
