package relay

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/internal/nbio"
	"github.com/tapstack/tapstack/sockets"
)

// handleUDP runs synchronously in the packet path: it must not block.
func (g *Gateway) handleUDP(r *udpRequest) bool {
	if e := g.engine(); e != nil && e.reassembled(r) {
		return true // a flow of the flow engine's
	}
	if g.draining.Load() {
		return false // ICMP port unreachable
	}
	v := g.decide(r.ID.Dst, g.st.IsLocal)
	if !v.ok {
		g.refused("udp", r.ID.Dst, v.reason)
		if v.silent {
			return true // dropped
		}
		if v.netUnreach && r.Unreachable(unreachNet) == nil {
			return true
		}
		return false // ICMP port unreachable, as for a closed port
	}
	if !tryAcquire(g.flows) {
		g.stats.busy.Add(1)
		g.limitLog("flows", "%d relayed flows: dropping new UDP flows (--max-flows)", g.cfg.MaxFlows)
		return true // dropped
	}
	s, err := r.Accept()
	if err != nil {
		g.tableFull(err)
		release(g.flows)
		return true
	}
	if !g.goTracked(func() {
		defer release(g.flows)
		g.relayUDP(r, s, v.dial)
	}) {
		s.Close()
		release(g.flows)
	}
	return true
}

// unreachFor says which ICMP error the namespace gets for an error of a
// host UDP socket, if any (Linux reports ICMP errors on a connected
// socket's next call).
func unreachFor(err error) (unreach, bool) {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return unreachPort, true
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return unreachHost, true
	case errors.Is(err, syscall.ENETUNREACH):
		return unreachNet, true
	}
	return 0, false
}

// setRecvErr asks the kernel for every ICMP error about hc's datagrams.
func setRecvErr(hc *net.UDPConn, v6 bool) {
	rc, err := hc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		if v6 {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1)
		} else {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1)
		}
	})
}

// drainErrQueue empties hc's error queue (IP_RECVERR fills it with one
// entry per error; left there, they would eat its receive buffer).
func drainErrQueue(hc *net.UDPConn) {
	rc, err := hc.SyscallConn()
	if err != nil {
		return
	}
	var buf [512]byte
	var oob [512]byte
	_ = rc.Control(func(fd uintptr) {
		for i := 0; i < 64; i++ {
			if _, _, _, _, err := unix.Recvmsg(int(fd), buf[:], oob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT); err != nil {
				return
			}
		}
	})
}

// relayUDP carries one UDP flow through a host socket with a random
// source port, until it idles out. Errors the host socket reports
// (port, host or network unreachable) reach the namespace as the ICMP
// errors Linux would send.
func (g *Gateway) relayUDP(r *udpRequest, s *sockets.Socket, dst netip.AddrPort) {
	var laddr *net.UDPAddr
	if src, ok := g.outboundFor(dst.Addr()); ok {
		laddr = &net.UDPAddr{IP: src.AsSlice()}
	}
	hc, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		g.stats.dialFail.Add(1)
		if why, ok := unreachFor(err); ok {
			_ = r.Unreachable(why)
		}
		s.Close()
		return
	}
	// With IP_RECVERR the host socket reports what Linux otherwise keeps
	// from a connected UDP socket, such as a failed ARP resolution (host
	// unreachable).
	setRecvErr(hc, dst.Addr().Is6())
	report := func(err error) bool {
		var errno syscall.Errno
		if !errors.As(err, &errno) {
			return false
		}
		drainErrQueue(hc)
		if why, ok := unreachFor(errno); ok {
			g.stats.udpErrors.Add(1)
			_ = r.Unreachable(why)
		}
		return true // an error of the flow, not of the socket: go on
	}
	g.stats.udp.Add(1)
	g.stats.active.Add(1)
	defer g.stats.active.Add(-1)
	pc := sockets.NewPacketConn(s)
	if !g.track(pc, hc) {
		return
	}
	defer g.untrack(pc, hc)
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	idle := g.cfg.UDPIdleTimeout
	f := g.newFlow("udp", "relay", r.ID.Src, dst.String(), hc.LocalAddr().String(), nil)
	defer g.endFlow(f)
	rc, err := hc.SyscallConn()
	if err != nil {
		return
	}
	host := newHostDatagrams(hc, rc)
	done := make(chan struct{}, 2)
	copyDatagrams := func(dst io.Writer, src deadlineReader, up bool) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 65535)
		// The read deadline moves on only every half of idle: a timeout
		// before the flow has been idle that long is looked at and
		// passed over below.
		var deadline time.Time
		for {
			if time.Until(deadline) < idle/2 {
				deadline = time.Now().Add(idle)
				_ = src.SetReadDeadline(deadline)
			}
			n, err := src.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < idle {
					continue // the other direction is busy
				}
				if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, net.ErrClosed) {
					return
				}
				if report(err) {
					continue // an ICMP error from the host side, passed on
				}
				return
			}
			last.Store(time.Now().UnixNano())
			if _, err := dst.Write(buf[:n]); err != nil {
				report(err)
			} else {
				f.moved(up, n)
			}
		}
	}
	go copyDatagrams(host, pc, true)
	go copyDatagrams(pc, host, false)
	<-done
	pc.Close()
	hc.Close()
	<-done
}

// deadlineReader is a socket read with a deadline.
type deadlineReader interface {
	io.Reader
	SetReadDeadline(time.Time) error
}

// hostDatagrams reads and writes a relayed flow's connected host UDP
// socket without entering Go's scheduler as a system call (nbio). Read
// and Write each run on one goroutine, with callbacks made once per flow
// (a closure per datagram was an allocation).
type hostDatagrams struct {
	*net.UDPConn
	rc syscall.RawConn

	rb, wb          []byte
	rn, wn          int
	rerr, werr      error
	readFn, writeFn func(uintptr) bool
}

func newHostDatagrams(hc *net.UDPConn, rc syscall.RawConn) *hostDatagrams {
	h := &hostDatagrams{UDPConn: hc, rc: rc}
	h.readFn = h.read
	h.writeFn = h.write
	return h
}

// read and write are the callbacks: false asks the poller to wait.
func (h *hostDatagrams) read(fd uintptr) bool {
	h.rn, h.rerr = nbio.Read(int(fd), h.rb)
	return h.rerr != unix.EAGAIN
}

func (h *hostDatagrams) write(fd uintptr) bool {
	h.wn, h.werr = nbio.Write(int(fd), h.wb)
	return h.werr != unix.EAGAIN
}

func (h *hostDatagrams) Read(b []byte) (int, error) {
	h.rb = b
	err := h.rc.Read(h.readFn)
	h.rb = nil
	return callResult(h.rn, err, h.rerr, "read")
}

func (h *hostDatagrams) Write(b []byte) (int, error) {
	h.wb = b
	err := h.rc.Write(h.writeFn)
	h.wb = nil
	return callResult(h.wn, err, h.werr, "write")
}

// callResult is a call's outcome: the poller's error (waitErr) first, then
// the system call's.
func callResult(n int, waitErr, callErr error, op string) (int, error) {
	if waitErr != nil {
		return 0, waitErr
	}
	if callErr != nil {
		return 0, os.NewSyscallError(op, callErr)
	}
	return n, nil
}
