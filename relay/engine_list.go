package relay

import (
	"fmt"
	"net/netip"
	"strings"
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
		if s := e.flows[i].state; s == stSynRcvd || s == stEstablished || s == stUDP {
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
		if f.state != stSynRcvd && f.state != stEstablished && f.state != stUDP {
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
		if f.state == stUDP {
			fi.Proto = "udp"
			fi.Idle = min(fi.Age, time.Duration((e.tick()-f.lastAt)*wheelTick))
			fi.Engine = fmt.Sprintf("expires_in:%dms", (f.lastAt+e.udpIdle()-e.tick())*wheelTick/int64(time.Millisecond))
			out = append(out, fi)
			continue
		}
		if ti, err := unix.GetsockoptTCPInfo(int(f.fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			fi.Idle = min(fi.Age, time.Duration(min(ti.Last_data_recv, ti.Last_data_sent))*time.Millisecond)
		}
		fi.Engine = e.describe(f, uint32(i))
		out = append(out, fi)
	}
	return out
}

// describe is flow idx's state as ss -i shows it: sequence numbers
// relative to each side's initial one, windows, timers, what waits in
// the engine for the host socket, and the flags.
func (e *engine) describe(f *tcpFlow, idx uint32) string {
	var b strings.Builder
	now := e.tick()
	fmt.Fprintf(&b, "snd_una:%d snd_nxt:%d snd_wnd:%d rcv_nxt:%d rcv_wnd:%d mss:%d rto:%d",
		f.sndUna-f.iss, f.sndNxt-f.iss, f.sndWnd, f.rcvNxt, f.room, f.mss, f.rto)
	if f.srtt != 0 {
		fmt.Fprintf(&b, " rtt:%.3f/%.3f", float64(f.srtt)/1000, float64(f.rttvar)/1000)
	}
	if f.retries > 0 || f.dupAcks > 0 {
		fmt.Fprintf(&b, " retrans:%d dupacks:%d", f.retries, f.dupAcks)
	}
	if f.rtoAt != 0 {
		fmt.Fprintf(&b, " rto_in:%dms", (f.rtoAt-now)*wheelTick/int64(time.Millisecond))
	}
	if f.ackAt != 0 {
		fmt.Fprintf(&b, " ack_in:%dms", (f.ackAt-now)*wheelTick/int64(time.Millisecond))
	}
	if f.copied > 0 {
		fmt.Fprintf(&b, " copied:%d", f.copied)
	}
	if q := len(e.queued[idx].q); q > 0 {
		fmt.Fprintf(&b, " queued:%d", q)
	}
	if hs := e.held[idx]; len(hs) > 0 {
		n := 0
		for _, h := range hs {
			n += len(h.data)
		}
		fmt.Fprintf(&b, " held:%d/%d", len(hs), n)
	}
	for _, fl := range []struct {
		bit  uint16
		name string
	}{{flFinRecv, "fin_in"}, {flFinSent, "fin_out"}, {flFinAcked, "fin_acked"}, {flHostMore, "host_more"},
		{flBlocked, "blocked"}, {flFinQueued, "fin_queued"}, {flHostEOF, "host_eof"}} {
		if f.flags&fl.bit != 0 {
			b.WriteString(" " + fl.name)
		}
	}
	return b.String()
}

// engine is the gateway's flow engine, or nil.
func (g *Gateway) engine() *engine {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.eng
}
