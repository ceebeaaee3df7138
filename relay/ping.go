package relay

import (
	"bytes"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// pingTimeout is how long a relayed echo waits for its reply.
const pingTimeout = 5 * time.Second

// handleEcho relays one echo request with a host socket: an unprivileged
// ping socket when net.ipv4.ping_group_range allows it, a raw ICMP socket
// otherwise. A reply is returned only if the real host answered.
func (g *Gateway) handleEcho(e *echoRequest) {
	v := g.decide(netip.AddrPortFrom(e.Dst, 0), g.st.IsLocal)
	if !v.ok {
		g.refused("icmp", netip.AddrPortFrom(e.Dst, 0), v.reason)
		return
	}
	if !tryAcquire(g.pings) {
		g.stats.pingsDropped.Add(1)
		g.limitLog("pings", "more than %d pings wait for replies: dropping new ones (--max-pings)", g.cfg.MaxPings)
		return // as a ping lost on the way
	}
	if !g.goTracked(func() {
		defer release(g.pings)
		data, ok := g.ping(v.dial.Addr(), e)
		if ok {
			g.stats.ping.Add(1)
			_ = e.Reply(data)
		}
	}) {
		release(g.pings)
	}
}

func (g *Gateway) ping(dst netip.Addr, e *echoRequest) ([]byte, bool) {
	v6 := dst.Is6() && !dst.Is4In6()
	var c *icmp.PacketConn
	var err error
	var raw bool
	local4, local6 := "0.0.0.0", "::"
	if src, ok := g.outboundFor(dst); ok {
		local4, local6 = src.String(), src.String()
	}
	if v6 {
		c, err = icmp.ListenPacket("udp6", local6)
		if err != nil {
			c, err = icmp.ListenPacket("ip6:ipv6-icmp", local6)
			raw = true
		}
	} else {
		c, err = icmp.ListenPacket("udp4", local4)
		if err != nil {
			c, err = icmp.ListenPacket("ip4:icmp", local4)
			raw = true
		}
	}
	if err != nil {
		g.logf("ping %s: no host ICMP socket: %v", dst, err)
		return nil, false
	}
	if !g.track(c) {
		return nil, false
	}
	defer g.untrack(c)
	var typ, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	proto := 1
	if v6 {
		typ, replyType, proto = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, 58
	}
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: int(e.ID), Seq: int(e.Seq), Data: e.Data}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return nil, false
	}
	var to net.Addr = &net.UDPAddr{IP: dst.AsSlice()}
	if raw {
		to = &net.IPAddr{IP: dst.AsSlice()}
	}
	if _, err := c.WriteTo(b, to); err != nil {
		return nil, false
	}
	deadline := time.Now().Add(pingTimeout)
	buf := make([]byte, len(e.Data)+128) // an echo reply is no larger than its request
	for {
		_ = c.SetReadDeadline(deadline)
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return nil, false
		}
		if fa, ok := from.(*net.UDPAddr); ok && !fa.IP.Equal(dst.AsSlice()) {
			continue
		}
		if fa, ok := from.(*net.IPAddr); ok && !fa.IP.Equal(dst.AsSlice()) {
			continue
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != replyType {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		// A ping socket rewrites the identifier; the sequence and the
		// payload identify our echo.
		if !ok || echo.Seq != int(e.Seq) || !bytes.Equal(echo.Data, e.Data) || (raw && echo.ID != int(e.ID)) {
			continue
		}
		return echo.Data, true
	}
}
