package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tapstack/tapstack/sockets"
)

// Forward is a port forward from the host into the namespace: connections
// (or datagrams) to Host on the host go to NSPort on NSAddr, or on the
// namespace's address of the same family when NSAddr is not set. The
// namespace sees them come from the client's own address and port, as
// slirp4netns keeps them; a client on the host's loopback, of the other
// family, or at an address the namespace could not answer through the
// stack (one of the namespace's own networks, link-local, multicast)
// comes from the stack's gateway address (10.0.2.2 or fd00::2 by
// default) instead.
type Forward struct {
	Proto  string // "tcp" or "udp"
	Host   netip.AddrPort
	NSAddr netip.Addr // optional
	NSPort uint16
	// V6Only makes a listener on [::] take IPv6 only, so that one on
	// 0.0.0.0 may share its port (pasta's automatic forwards).
	V6Only bool
	// Iface, if set, binds the host's listener to that interface
	// (SO_BINDTODEVICE; pasta's ADDR%IF/).
	Iface string
}

// String is the forward's spec: HOSTADDR:HOSTPORT:[NSADDR:]NSPORT/PROTO.
func (f Forward) String() string {
	if f.Iface != "" {
		host := netip.AddrPortFrom(f.Host.Addr().WithZone(""), f.Host.Port()).String()
		i := strings.LastIndexByte(host, ':')
		return fmt.Sprintf("%s%%%s%s:%d/%s", host[:i], f.Iface, host[i:], f.NSPort, f.Proto)
	}
	if f.NSAddr.IsValid() {
		return fmt.Sprintf("%s:%s/%s", f.Host, netip.AddrPortFrom(f.NSAddr, f.NSPort), f.Proto)
	}
	return fmt.Sprintf("%s:%d/%s", f.Host, f.NSPort, f.Proto)
}

// ParseForward parses [HOSTADDR:]HOSTPORT:[NSADDR:]NSPORT[/tcp|/udp].
// HOSTADDR is an IPv4 address or a bracketed IPv6 one and defaults to
// 127.0.0.1; NSADDR likewise, and defaults to the namespace's address.
func ParseForward(spec string) (Forward, error) {
	bad := func(why string) (Forward, error) {
		return Forward{}, fmt.Errorf("port forward %q: %s (want [HOSTADDR:]HOSTPORT:[NSADDR:]NSPORT[/tcp|/udp])", spec, why)
	}
	f := Forward{Proto: "tcp"}
	s := spec
	if i := strings.LastIndex(s, "/"); i >= 0 {
		f.Proto = s[i+1:]
		s = s[:i]
		if f.Proto != "tcp" && f.Proto != "udp" {
			return bad("protocol must be tcp or udp")
		}
	}
	// Fields split at colons outside brackets.
	var fields []string
	for s != "" {
		if s[0] == '[' {
			end := strings.Index(s, "]")
			if end < 0 {
				return bad("unclosed [")
			}
			fields = append(fields, s[:end+1])
			s = s[end+1:]
			if s != "" && s[0] != ':' {
				return bad("want : after ]")
			}
		} else {
			i := strings.IndexByte(s, ':')
			if i < 0 {
				i = len(s)
			}
			fields = append(fields, s[:i])
			s = s[i:]
		}
		if s != "" {
			s = s[1:]
			if s == "" {
				fields = append(fields, "")
			}
		}
	}
	addr := func(field string) (netip.Addr, bool) {
		if strings.HasPrefix(field, "[") {
			a, err := netip.ParseAddr(strings.TrimSuffix(field[1:], "]"))
			return a, err == nil && a.Is6() && a.Zone() == ""
		}
		a, err := netip.ParseAddr(field)
		return a, err == nil && a.Is4()
	}
	host := netip.MustParseAddr("127.0.0.1")
	var nsAddr netip.Addr
	var ok bool
	switch len(fields) {
	case 2:
	case 3:
		if host, ok = addr(fields[0]); !ok {
			return bad("bad host address (bracket IPv6 addresses)")
		}
		fields = fields[1:]
	case 4:
		if host, ok = addr(fields[0]); !ok {
			return bad("bad host address (bracket IPv6 addresses)")
		}
		if nsAddr, ok = addr(fields[2]); !ok {
			return bad("bad namespace address (bracket IPv6 addresses)")
		}
		fields = []string{fields[1], fields[3]}
	default:
		return bad("wrong number of fields")
	}
	hp, err1 := strconv.Atoi(fields[0])
	np, err2 := strconv.Atoi(fields[1])
	if err1 != nil || err2 != nil || hp < 0 || hp > 65535 || np < 1 || np > 65535 {
		return bad("ports must be numbers (host 0-65535, namespace 1-65535)")
	}
	f.Host = netip.AddrPortFrom(host, uint16(hp))
	f.NSAddr = nsAddr
	f.NSPort = uint16(np)
	return f, nil
}

// forward is a running port forward.
type forward struct {
	Forward
	target netip.AddrPort
	ln     net.Listener   // tcp
	pc     net.PacketConn // udp

	conns, up, down atomic.Uint64 // what went through it (ForwardList)
}

func (f *forward) Close() error {
	if f.ln != nil {
		return f.ln.Close()
	}
	return f.pc.Close()
}

// target is the forward's NSAddr, accepted by Config.AddGuest, or the
// namespace address of the forward's family.
func (g *Gateway) target(f Forward) (netip.AddrPort, error) {
	if f.NSAddr.IsValid() {
		if !slices.Contains(g.cfg.NSAddrs, f.NSAddr) {
			if g.cfg.AddGuest == nil {
				return netip.AddrPort{}, fmt.Errorf("port forward %s: forwards go to the namespace's own addresses only", f)
			}
			if err := g.cfg.AddGuest(f.NSAddr); err != nil {
				return netip.AddrPort{}, fmt.Errorf("port forward %s: %w", f, err)
			}
		}
		return netip.AddrPortFrom(f.NSAddr, f.NSPort), nil
	}
	want4 := f.Host.Addr().Is4() || f.Host.Addr().Is4In6()
	for _, a := range g.cfg.NSAddrs {
		if a.Is4() == want4 {
			return netip.AddrPortFrom(a, f.NSPort), nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("port forward %s: the namespace has no address of that family", f)
}

// AddForward starts a port forward.
func (g *Gateway) AddForward(f Forward) error {
	tgt, err := g.target(f)
	if err != nil {
		return err
	}
	key := f.String()
	g.mu.Lock()
	_, dup := g.fwds[key]
	g.mu.Unlock()
	if dup {
		return fmt.Errorf("port forward %s exists already", key)
	}
	fw := &forward{Forward: f, target: tgt}
	// Go listens on 0.0.0.0 with an IPv6 socket that takes both families
	// unless told tcp4; [::] takes IPv6 only when told tcp6.
	network := f.Proto
	switch {
	case f.Host.Addr().Is4():
		network += "4"
	case f.V6Only:
		network += "6"
	}
	var lc net.ListenConfig
	if f.Iface != "" {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = syscall.BindToDevice(int(fd), f.Iface) }); err != nil {
				return err
			}
			return serr
		}
	}
	if f.Proto == "tcp" {
		fw.ln, err = lc.Listen(context.Background(), network, f.Host.String())
	} else {
		fw.pc, err = lc.ListenPacket(context.Background(), network, f.Host.String())
	}
	if err != nil {
		return fmt.Errorf("port forward %s: %w", key, err)
	}
	// A port 0 forward learns its port now.
	if f.Host.Port() == 0 {
		var la net.Addr
		if fw.ln != nil {
			la = fw.ln.Addr()
		} else {
			la = fw.pc.LocalAddr()
		}
		if ap, err := netip.ParseAddrPort(la.String()); err == nil {
			fw.Host = netip.AddrPortFrom(f.Host.Addr(), ap.Port())
			key = fw.Forward.String()
		}
	}
	if !g.track(fw) {
		return errors.New("gateway closed")
	}
	g.mu.Lock()
	g.fwds[key] = fw
	g.mu.Unlock()
	if fw.ln != nil {
		g.goTracked(func() { g.serveForwardTCP(fw) })
	} else {
		g.goTracked(func() { g.serveForwardUDP(fw) })
	}
	g.logf("port forward %s -> %s", key, tgt)
	return nil
}

// RemoveForward stops the forward with this spec (as Forwards lists it).
// Connections already made through it go on.
func (g *Gateway) RemoveForward(spec string) error {
	f, err := ParseForward(spec)
	if err != nil {
		return err
	}
	g.mu.Lock()
	fw, ok := g.fwds[f.String()]
	delete(g.fwds, f.String())
	g.mu.Unlock()
	if !ok {
		return fmt.Errorf("no port forward %s", f)
	}
	g.untrack(fw)
	return nil
}

// Forwards lists the running forwards, sorted.
func (g *Gateway) Forwards() []Forward {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []Forward
	for _, fw := range g.fwds {
		out = append(out, fw.Forward)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func (g *Gateway) serveForwardTCP(fw *forward) {
	for {
		hc, err := fw.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		g.stats.forwarded.Add(1)
		g.goTracked(func() {
			ctx, cancel := context.WithTimeout(g.ctx, g.cfg.ConnectTimeout)
			c, err := g.dialFrom(ctx, sockets.SOCK_STREAM, addrPortOf(hc.RemoteAddr()), fw.target)
			cancel()
			if err != nil {
				// Nothing listens in the namespace: reset the host side.
				_ = hc.(*net.TCPConn).SetLinger(0)
				hc.Close()
				return
			}
			sc := c.(*sockets.Conn)
			if !g.track(sc, hc) {
				return
			}
			f := g.newFlow("tcp", "forward", fw.target, hc.RemoteAddr().String(), hc.LocalAddr().String(), fw)
			splice(sc, hc.(*net.TCPConn), f, g.hw, g.goTracked, nil, func() {
				g.endFlow(f)
				g.untrack(sc, hc)
			})
		})
	}
}

// serveForwardUDP keeps one stack socket per host peer, connected to the
// target, until the flow idles out.
func (g *Gateway) serveForwardUDP(fw *forward) {
	var mu sync.Mutex
	type udpFlow struct {
		c net.Conn
		f *flow
	}
	flows := map[string]udpFlow{}
	buf := make([]byte, 65535)
	for {
		n, from, err := fw.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				mu.Lock()
				for _, uf := range flows {
					uf.c.Close()
				}
				mu.Unlock()
				return
			}
			continue
		}
		mu.Lock()
		uf, ok := flows[from.String()]
		mu.Unlock()
		c, f := uf.c, uf.f
		if !ok {
			// Each flow (one per remote source) holds a stack socket
			// and a goroutine: they count against --max-flows.
			if !tryAcquire(g.flows) {
				g.stats.busy.Add(1)
				g.limitLog("fwd-flows", "%d flows: dropping datagrams of new UDP forward flows (--max-flows)", g.cfg.MaxFlows)
				continue
			}
			c, err = g.dialFrom(g.ctx, sockets.SOCK_DGRAM, addrPortOf(from), fw.target)
			if err != nil {
				release(g.flows)
				continue
			}
			g.stats.forwarded.Add(1)
			peer := from
			f = g.newFlow("udp", "forward", fw.target, peer.String(), fw.pc.LocalAddr().String(), fw)
			mu.Lock()
			flows[from.String()] = udpFlow{c, f}
			mu.Unlock()
			if !g.goTracked(func() {
				defer func() {
					g.endFlow(f)
					mu.Lock()
					delete(flows, peer.String())
					mu.Unlock()
					c.Close()
					release(g.flows)
				}()
				rb := make([]byte, 65535)
				for {
					_ = c.SetReadDeadline(time.Now().Add(g.cfg.UDPIdleTimeout))
					n, err := c.Read(rb)
					if err != nil {
						var ne net.Error
						if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, net.ErrClosed) {
							return
						}
						continue
					}
					if _, err := fw.pc.WriteTo(rb[:n], peer); err != nil {
						return
					}
					f.moved(false, n)
				}
			}) {
				g.endFlow(f)
				c.Close()
				release(g.flows)
				return
			}
		}
		if _, err := c.Write(buf[:n]); err == nil {
			f.moved(true, n)
		}
	}
}

// forwardSource is where a forwarded client appears from in the
// namespace (see Forward): its own address and port, or the gateway's
// address of the target's family (port 0: any).
func (g *Gateway) forwardSource(client netip.AddrPort, target netip.Addr) netip.AddrPort {
	a := client.Addr().Unmap()
	gateway := func() netip.AddrPort {
		for _, l := range g.cfg.LoopbackAddrs {
			if l.Is4() == target.Is4() {
				return netip.AddrPortFrom(l, 0)
			}
		}
		return netip.AddrPort{}
	}
	if !a.IsValid() || a.Is4() != target.Is4() || a.IsLoopback() || a.IsUnspecified() || a.IsLinkLocalUnicast() ||
		a.IsMulticast() || g.st.IsLocal(a) || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return gateway()
	}
	for _, n := range g.st.NICs() {
		for _, p := range n.Addrs {
			if !n.Loopback && p.Masked().Contains(a) {
				return gateway() // on the namespace's link: it would ask ARP for it
			}
		}
	}
	return netip.AddrPortFrom(a, client.Port())
}

// dialFrom connects a stack socket of type typ to target, from where the
// forwarded client appears (forwardSource). The gateway NIC owns every
// address (it spoofs), so a client's address can be bound; if its port
// is taken (a client that reuses one quickly), any port does.
func (g *Gateway) dialFrom(ctx context.Context, typ sockets.Type, client, target netip.AddrPort) (net.Conn, error) {
	src := g.forwardSource(client, target.Addr())
	s, err := sockets.New(g.st, familyOf(target.Addr()), typ, 0)
	if err != nil {
		return nil, err
	}
	if src.IsValid() {
		err := s.Bind(sockets.Addr{Host: src.Addr().String(), Port: int(src.Port())})
		if errors.Is(err, syscall.EADDRINUSE) {
			err = s.Bind(sockets.Addr{Host: src.Addr().String()})
		}
		if err != nil {
			s.Close()
			return nil, err
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = s.SetDeadline(time.Unix(1, 0)) })
	err = s.Connect(sockets.Addr{Host: target.Addr().String(), Port: int(target.Port())})
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	_ = s.SetDeadline(time.Time{})
	if typ == sockets.SOCK_STREAM {
		return sockets.NewConn(s), nil
	}
	return sockets.NewPacketConn(s), nil
}

// addrPortOf is a host socket address as a netip.AddrPort (zero if it is
// not an IP address).
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// ControlHandler adapts a Gateway to the control socket's string requests.
type ControlHandler struct {
	G *Gateway
	// Extra are the counters of other parts (the link) that Stats adds.
	Extra []Counter
}

// AddForward parses spec and starts the forward.
func (c ControlHandler) AddForward(spec string) error {
	f, err := ParseForward(spec)
	if err != nil {
		return err
	}
	return c.G.AddForward(f)
}

// RemoveForward stops a forward.
func (c ControlHandler) RemoveForward(spec string) error { return c.G.RemoveForward(spec) }

// ListForwards lists the forwards as specs.
func (c ControlHandler) ListForwards() []string {
	var out []string
	for _, f := range c.G.Forwards() {
		out = append(out, f.String())
	}
	return out
}

// Stats returns the counter table, by name, for the control socket's
// "stats": the gateway's, the process's, and Extra's.
func (c ControlHandler) Stats() map[string]uint64 {
	return CounterMap(append(append(c.G.Counters(), ProcessCounters()...), c.Extra...))
}
