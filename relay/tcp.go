package relay

import (
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/tapstack/tapstack/sockets"
)

// timeWaitGrace bounds how long a finished relay waits for the
// namespace to acknowledge its FIN before it closes its side.
const timeWaitGrace = time.Second

// handleTCP runs on the goroutine the forwarder started for this SYN,
// a new one each time: the relay runs on one of the pool's, whose stack
// has grown already.
func (g *Gateway) handleTCP(r *tcpRequest) {
	if !g.goPooled(func() { g.relayTCP(r) }) {
		r.Refuse()
	}
}

func (g *Gateway) relayTCP(r *tcpRequest) {
	if g.draining.Load() {
		r.Refuse() // a host that is shutting down
		return
	}
	v := g.decide(r.ID.Dst, g.st.IsLocal)
	if !v.ok {
		g.refused("tcp", r.ID.Dst, v.reason)
		switch {
		case v.silent:
			r.Ignore()
		case v.netUnreach:
			r.Unreachable(true)
		default:
			r.Refuse()
		}
		return
	}
	slot := g.dials.start(g.ctx, v.dial.Addr())
	if slot == nil {
		g.stats.busy.Add(1)
		g.limitLog("dials", "dial slots full (%d, %d per address): dropping SYNs to %s (--max-pending-dials)", g.cfg.MaxPendingDials, g.cfg.MaxPendingPerDest, v.dial.Addr())
		r.Ignore() // the peer retries its SYN
		return
	}
	d := net.Dialer{Timeout: g.cfg.ConnectTimeout}
	if src, ok := g.outboundFor(v.dial.Addr()); ok {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	began := time.Now()
	hc, err := d.DialContext(slot.ctx, "tcp", v.dial.String())
	g.dialStats.record(time.Since(began), err)
	if g.dials.end(slot, err == nil) && err != nil {
		r.Ignore() // evicted for a less busy address: the peer retries
		return
	}
	if err != nil {
		g.stats.dialFail.Add(1)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			r.Refuse()
		case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
			r.Unreachable(false)
		case errors.Is(err, syscall.ENETUNREACH):
			r.Unreachable(true)
		default: // timed out, or we are closing: the peer times out too
			r.Ignore()
		}
		return
	}
	if !tryAcquire(g.flows) {
		g.stats.busy.Add(1)
		g.limitLog("flows", "%d relayed flows: refusing new connections (--max-flows)", g.cfg.MaxFlows)
		hc.Close()
		r.Refuse()
		return
	}
	s, err := r.Accept()
	if err != nil {
		// The namespace side is gone (reset during the handshake, or the
		// socket table is full): reset the host side too.
		g.tableFull(err)
		_ = hc.(*net.TCPConn).SetLinger(0)
		hc.Close()
		release(g.flows)
		return
	}
	g.stats.tcp.Add(1)
	sc := sockets.NewConn(s)
	if !g.track(sc, hc) {
		release(g.flows)
		return
	}
	g.stats.active.Add(1)
	g.uploads.Add(1)
	f := g.newFlow("tcp", "relay", r.ID.Src, v.dial.String(), hc.LocalAddr().String(), nil)
	// The splice runs on two fresh goroutines and this one ends: an idle
	// connection then holds two small stacks, not this goroutine's,
	// grown by the handshake and the dial.
	splice(sc, hc.(*net.TCPConn), f, g.hw, g.goTracked, func() { g.uploads.Add(-1) }, func() {
		g.endFlow(f)
		// A reused source port must find no TIME-WAIT here (see
		// sockets.Socket.CloseWithoutTimeWait).
		_ = sc.Socket().CloseWithoutTimeWait(timeWaitGrace)
		g.untrack(sc, hc)
		g.stats.active.Add(-1)
		release(g.flows)
	})
}

// tableFull counts and logs a flow refused because the stack's socket
// table is full (the namespace sees a RST, or silence for UDP).
func (g *Gateway) tableFull(err error) {
	if errors.Is(err, syscall.EMFILE) {
		g.stats.tableFull.Add(1)
		g.limitLog("sockets", "the socket table is full: refusing new flows (--max-sockets): %v", err)
	}
}
