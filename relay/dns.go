package relay

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tapstack/tapstack/sockets"
)

// dnsTimeout bounds one upstream exchange.
const dnsTimeout = 3 * time.Second

// resolvers reads the upstream servers from a resolv.conf, again whenever
// the file changes.
type resolvers struct {
	path      string
	fixedPort uint16 // the servers' port; 0 is 53 (tests serve elsewhere)

	mu      sync.Mutex
	mtime   time.Time
	size    int64
	servers []netip.AddrPort
}

func (r *resolvers) get() []netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	fi, err := os.Stat(r.path)
	if err != nil {
		return r.servers
	}
	if fi.ModTime().Equal(r.mtime) && fi.Size() == r.size && r.servers != nil {
		return r.servers
	}
	f, err := os.Open(r.path)
	if err != nil {
		return r.servers
	}
	defer f.Close()
	var servers []netip.AddrPort
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				port := uint16(53)
				if r.fixedPort != 0 {
					port = r.fixedPort
				}
				servers = append(servers, netip.AddrPortFrom(a, port))
			}
		}
	}
	r.mtime, r.size, r.servers = fi.ModTime(), fi.Size(), servers
	return servers
}

// startDNS serves DNS at addr:53 of the stack, over UDP and TCP.
func (g *Gateway) startDNS(addr netip.Addr) error {
	ap := netip.AddrPortFrom(addr, 53)
	network := "udp4"
	if addr.Is6() {
		network = "udp6"
	}
	pc, err := sockets.ListenPacket(g.st, network, ap.String())
	if err != nil {
		return err
	}
	ln, err := sockets.Listen(g.st, strings.Replace(network, "udp", "tcp", 1), ap.String())
	if err != nil {
		pc.Close()
		return err
	}
	if !g.track(pc, ln) {
		return errors.New("gateway closed")
	}
	g.goTracked(func() { g.serveDNSUDP(pc) })
	g.goTracked(func() { g.serveDNSTCP(ln) })
	return nil
}

func (g *Gateway) serveDNSUDP(pc *sockets.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !tryAcquire(g.dnsq) {
			g.stats.dnsDropped.Add(1)
			g.limitLog("dns", "%d DNS queries in flight: dropping new ones (the resolver retries)", g.cfg.MaxDNSQueries)
			continue
		}
		q := append([]byte{}, buf[:n]...)
		if !g.goTracked(func() {
			defer release(g.dnsq)
			if resp := g.forwardDNS(q, false); resp != nil {
				_, _ = pc.WriteTo(resp, from)
			}
		}) {
			release(g.dnsq)
		}
	}
}

func (g *Gateway) serveDNSTCP(ln *sockets.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !g.track(c) {
			return
		}
		g.goTracked(func() {
			defer g.untrack(c)
			for {
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				q, err := readFramed(c)
				if err != nil {
					return
				}
				resp := g.forwardDNS(q, true)
				if resp == nil {
					return
				}
				if err := writeFramed(c, resp); err != nil {
					return
				}
			}
		})
	}
}

func readFramed(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	_, err := io.ReadFull(r, b)
	return b, err
}

func writeFramed(w io.Writer, b []byte) error {
	out := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(out, uint16(len(b)))
	copy(out[2:], b)
	_, err := w.Write(out)
	return err
}

// forwardDNS sends one query to the upstream servers in turn, with a fresh
// random ID (and, over UDP, a fresh random source port), and returns the
// answer with the client's ID restored.
func (g *Gateway) forwardDNS(q []byte, overTCP bool) []byte {
	if len(q) < 12 {
		return nil
	}
	g.stats.dns.Add(1)
	clientID := binary.BigEndian.Uint16(q)
	for _, srv := range g.resolv.get() {
		var idb [2]byte
		_, _ = rand.Read(idb[:])
		id := binary.BigEndian.Uint16(idb[:])
		out := append([]byte{}, q...)
		binary.BigEndian.PutUint16(out, id)
		resp, err := exchange(srv, g.outboundFor, out, id, overTCP, g.dnsTimeout)
		if err != nil {
			continue
		}
		binary.BigEndian.PutUint16(resp, clientID)
		g.stats.dnsAnswered.Add(1)
		return resp
	}
	g.stats.dnsFailed.Add(1)
	return nil
}

// dnsBufs holds the buffers upstream answers are read into, one per query
// in flight while it waits.
var dnsBufs = sync.Pool{New: func() any {
	b := make([]byte, 65535)
	return &b
}}

// exchange sends query q to srv and returns its answer; source picks the
// local address for srv, if any.
func exchange(srv netip.AddrPort, source func(netip.Addr) (netip.Addr, bool), q []byte, id uint16, overTCP bool, timeout time.Duration) ([]byte, error) {
	network := "udp"
	d := net.Dialer{Timeout: timeout}
	src, bind := source(srv.Addr())
	if overTCP {
		network = "tcp"
		if bind {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
	} else if bind {
		d.LocalAddr = &net.UDPAddr{IP: src.AsSlice()}
	}
	c, err := d.Dial(network, srv.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if overTCP {
		if err := writeFramed(c, q); err != nil {
			return nil, err
		}
		resp, err := readFramed(c)
		if err != nil || len(resp) < 12 || binary.BigEndian.Uint16(resp) != id {
			return nil, errors.New("bad answer")
		}
		return resp, nil
	}
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	bp := dnsBufs.Get().(*[]byte)
	defer dnsBufs.Put(bp)
	buf := *bp
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if n >= 12 && binary.BigEndian.Uint16(buf) == id {
			return append([]byte{}, buf[:n]...), nil
		}
	}
}
