package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tapstack/tapstack/sockets"
)

// Forward is a port forward from the host into the namespace: connections
// (or datagrams) to Host on the host go to NSPort on the namespace's
// address of the same family. The namespace sees them come from the
// stack's address (10.0.2.2 or fd00::2 by default).
type Forward struct {
	Proto  string // "tcp" or "udp"
	Host   netip.AddrPort
	NSPort uint16
}

// String is the forward's spec: HOSTADDR:HOSTPORT:NSPORT/PROTO.
func (f Forward) String() string {
	return fmt.Sprintf("%s:%d/%s", f.Host, f.NSPort, f.Proto)
}

// ParseForward parses [HOSTADDR:]HOSTPORT:NSPORT[/tcp|/udp]; HOSTADDR is
// an IPv4 address or a bracketed IPv6 one and defaults to 127.0.0.1.
func ParseForward(spec string) (Forward, error) {
	bad := func(why string) (Forward, error) {
		return Forward{}, fmt.Errorf("port forward %q: %s (want [HOSTADDR:]HOSTPORT:NSPORT[/tcp|/udp])", spec, why)
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
	host := netip.MustParseAddr("127.0.0.1")
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 || len(s) < end+2 || s[end+1] != ':' {
			return bad("unclosed [")
		}
		a, err := netip.ParseAddr(s[1:end])
		if err != nil {
			return bad("bad IPv6 address")
		}
		host, s = a, s[end+2:]
	}
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 2:
	case 3:
		a, err := netip.ParseAddr(parts[0])
		if err != nil || !a.Is4() {
			return bad("bad host address (bracket IPv6 addresses)")
		}
		host, parts = a, parts[1:]
	default:
		return bad("wrong number of fields")
	}
	hp, err1 := strconv.Atoi(parts[0])
	np, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || hp < 0 || hp > 65535 || np < 1 || np > 65535 {
		return bad("ports must be numbers (host 0-65535, namespace 1-65535)")
	}
	f.Host = netip.AddrPortFrom(host, uint16(hp))
	f.NSPort = uint16(np)
	return f, nil
}

// forward is a running port forward.
type forward struct {
	Forward
	target netip.AddrPort
	ln     net.Listener   // tcp
	pc     net.PacketConn // udp
}

func (f *forward) Close() error {
	if f.ln != nil {
		return f.ln.Close()
	}
	return f.pc.Close()
}

// target picks the namespace address of the forward's family.
func (g *Gateway) target(f Forward) (netip.AddrPort, error) {
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
	if f.Proto == "tcp" {
		fw.ln, err = net.Listen("tcp", f.Host.String())
	} else {
		fw.pc, err = net.ListenPacket("udp", f.Host.String())
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
	network := "tcp4"
	if fw.target.Addr().Is6() {
		network = "tcp6"
	}
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
			c, err := sockets.Dial(ctx, g.st, network, fw.target.String())
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
			splice(sc, hc.(*net.TCPConn), g.goTracked, nil, func() { g.untrack(sc, hc) })
		})
	}
}

// serveForwardUDP keeps one stack socket per host peer, connected to the
// target, until the flow idles out.
func (g *Gateway) serveForwardUDP(fw *forward) {
	network := "udp4"
	if fw.target.Addr().Is6() {
		network = "udp6"
	}
	var mu sync.Mutex
	flows := map[string]net.Conn{}
	buf := make([]byte, 65535)
	for {
		n, from, err := fw.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				mu.Lock()
				for _, c := range flows {
					c.Close()
				}
				mu.Unlock()
				return
			}
			continue
		}
		mu.Lock()
		c, ok := flows[from.String()]
		mu.Unlock()
		if !ok {
			// Each flow (one per remote source) holds a stack socket
			// and a goroutine: they count against --max-flows.
			if !tryAcquire(g.flows) {
				g.stats.busy.Add(1)
				g.limitLog("fwd-flows", "%d flows: dropping datagrams of new UDP forward flows (--max-flows)", g.cfg.MaxFlows)
				continue
			}
			c, err = sockets.Dial(g.ctx, g.st, network, fw.target.String())
			if err != nil {
				release(g.flows)
				continue
			}
			g.stats.forwarded.Add(1)
			mu.Lock()
			flows[from.String()] = c
			mu.Unlock()
			peer := from
			if !g.goTracked(func() {
				defer func() {
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
				}
			}) {
				c.Close()
				release(g.flows)
				return
			}
		}
		_, _ = c.Write(buf[:n])
	}
}

// ControlHandler adapts a Gateway to the control socket's string requests.
type ControlHandler struct {
	G *Gateway
	// Extra, if set, adds counters of other parts (the link) to Stats.
	Extra func() map[string]uint64
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

// Stats returns the gateway's counters and the process's goroutines, by
// name, for the control socket's "stats".
func (c ControlHandler) Stats() map[string]uint64 {
	st := c.G.Stats()
	m := map[string]uint64{
		"tcp_relayed": st.TCPRelayed, "udp_relayed": st.UDPRelayed, "pings_relayed": st.PingsRelayed,
		"active_flows": uint64(max(st.ActiveFlows, 0)), "refused": st.Refused, "dial_failures": st.DialFailures,
		"dropped_busy": st.DroppedBusy, "dns_queries": st.DNSQueries, "forwarded": st.Forwarded,
		"udp_errors": st.UDPErrors, "spoofed": st.Spoofed, "pending_dials": uint64(st.PendingDials),
		"dials_evicted": st.DialsEvicted, "dns_dropped": st.DNSDropped, "pings_dropped": st.PingsDropped,
		"syns_dropped": st.SYNsDropped, "goroutines": uint64(runtime.NumGoroutine()),
		"sockets_in_use": uint64(sockets.Table(c.G.st).InUse), "socket_table_full": st.TableFull,
	}
	if c.Extra != nil {
		for k, v := range c.Extra() {
			m[k] = v
		}
	}
	return m
}
