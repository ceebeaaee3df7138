package relay

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// engineFlowCount is how many connections the flow engine relays.
func (g *Gateway) engineFlowCount() int {
	e := g.engine()
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for i := range e.flows {
		if s := e.flows[i].state; s == stSynRcvd || s == stEstablished {
			n++
		}
	}
	return n
}

// engineFlows appends the flow engine's connections to out, as FlowList
// shows them: the host socket's local address and idle time come from
// the kernel (getsockname, TCP_INFO).
func (g *Gateway) engineFlows(out []FlowInfo, now time.Time) []FlowInfo {
	e := g.engine()
	if e == nil {
		return out
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range e.flows {
		f := &e.flows[i]
		if f.state != stSynRcvd && f.state != stEstablished {
			continue
		}
		start := time.Unix(0, f.start)
		fi := FlowInfo{
			Proto: "tcp", Kind: "relay", State: "established",
			NS:  netip.AddrPortFrom(addrOf(f.v6, f.src), f.sport).String(),
			Dst: netip.AddrPortFrom(addrOf(f.v6, f.dst), f.dport).String(),
			Up:  f.up, Down: f.down, Since: start, Age: now.Sub(start),
		}
		if f.flags&(flFinRecv|flFinSent) != 0 {
			fi.State = "closing"
		}
		if sa, err := unix.Getsockname(int(f.fd)); err == nil {
			fi.Local = sockaddrString(sa)
		}
		fi.Idle = fi.Age
		if ti, err := unix.GetsockoptTCPInfo(int(f.fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			fi.Idle = min(fi.Age, time.Duration(min(ti.Last_data_recv, ti.Last_data_sent))*time.Millisecond)
		}
		out = append(out, fi)
	}
	return out
}

// engine is the gateway's flow engine, or nil.
func (g *Gateway) engine() *engine {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.eng
}
