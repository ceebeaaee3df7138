package daemon

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tapstack/tapstack/stack/netns"
)

// NSForward forwards what the namespace sends to port NSPort of its own
// loopback (127.0.0.1 and ::1) on to port HostPort of the host's
// loopback: pasta's -T and -U, the other way from relay.Forward.
type NSForward struct {
	Proto            string // "tcp" or "udp"
	NSPort, HostPort uint16
}

// String is the forward's spec: NSPORT:HOSTPORT/PROTO.
func (f NSForward) String() string { return fmt.Sprintf("%d:%d/%s", f.NSPort, f.HostPort, f.Proto) }

// nsForwards are the running NSForwards: sockets made inside the
// namespace (from a thread that entered it) and the goroutines serving
// them.
type nsForwards struct {
	ns *netns.Namespace

	mu     sync.Mutex
	active map[NSForward][]io.Closer // protected by mu
	conns  map[io.Closer]bool        // connections in progress; protected by mu
	closed bool                      // protected by mu
	wg     sync.WaitGroup
}

// add starts f: it listens inside the namespace on the loopback of each
// family there is (IPv4 at least).
func (n *nsForwards) add(f NSForward) error {
	n.mu.Lock()
	if n.closed || n.active[f] != nil {
		n.mu.Unlock()
		return nil
	}
	n.mu.Unlock()
	var socks []io.Closer
	for _, lo := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		var c io.Closer
		err := n.ns.Do(func() error {
			addr := netip.AddrPortFrom(lo, f.NSPort).String()
			var err error
			if f.Proto == "tcp" {
				c, err = net.Listen("tcp", addr)
			} else {
				c, err = net.ListenPacket("udp", addr)
			}
			return err
		})
		if err != nil {
			if lo.Is4() {
				for _, s := range socks {
					s.Close()
				}
				return fmt.Errorf("forward %s from the namespace: %w", f, err)
			}
			continue // no IPv6 in the namespace
		}
		socks = append(socks, c)
		host := netip.AddrPortFrom(lo, f.HostPort).String()
		n.wg.Add(1)
		switch c := c.(type) {
		case net.Listener:
			go n.serveTCP(c, host)
		case net.PacketConn:
			go n.serveUDP(c, host)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		for _, s := range socks {
			s.Close()
		}
		return errors.New("closed")
	}
	n.active[f] = socks
	return nil
}

// remove stops f; connections made through it go on.
func (n *nsForwards) remove(f NSForward) {
	n.mu.Lock()
	socks := n.active[f]
	delete(n.active, f)
	n.mu.Unlock()
	for _, s := range socks {
		s.Close()
	}
}

// track records a connection for close; false once closed.
func (n *nsForwards) track(cs ...io.Closer) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	for _, c := range cs {
		n.conns[c] = true
	}
	return true
}

func (n *nsForwards) untrack(cs ...io.Closer) {
	n.mu.Lock()
	for _, c := range cs {
		delete(n.conns, c)
	}
	n.mu.Unlock()
}

func (n *nsForwards) serveTCP(ln net.Listener, host string) {
	defer n.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		h, err := net.DialTimeout("tcp", host, 10*time.Second)
		if err != nil {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			continue
		}
		if !n.track(c, h) {
			c.Close()
			h.Close()
			return
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			var both sync.WaitGroup
			both.Add(2)
			pipe := func(dst, src net.Conn) {
				defer both.Done()
				io.Copy(dst, src)
				dst.(*net.TCPConn).CloseWrite()
			}
			go pipe(h, c)
			go pipe(c, h)
			both.Wait()
			c.Close()
			h.Close()
			n.untrack(c, h)
		}()
	}
}

// serveUDP keeps a host socket per peer in the namespace until it has
// been idle for a minute.
func (n *nsForwards) serveUDP(pc net.PacketConn, host string) {
	defer n.wg.Done()
	var mu sync.Mutex
	peers := map[string]net.Conn{}
	buf := make([]byte, 65535)
	for {
		k, from, err := pc.ReadFrom(buf)
		if err != nil {
			mu.Lock()
			for _, h := range peers {
				h.Close()
			}
			mu.Unlock()
			return
		}
		mu.Lock()
		h := peers[from.String()]
		mu.Unlock()
		if h == nil {
			if h, err = net.Dial("udp", host); err != nil {
				continue
			}
			if !n.track(h) {
				h.Close()
				return
			}
			mu.Lock()
			peers[from.String()] = h
			mu.Unlock()
			n.wg.Add(1)
			go func(h net.Conn, peer net.Addr) {
				defer n.wg.Done()
				rb := make([]byte, 65535)
				for {
					h.SetReadDeadline(time.Now().Add(time.Minute))
					m, err := h.Read(rb)
					if err != nil {
						var ne net.Error
						if errors.As(err, &ne) && !ne.Timeout() && !errors.Is(err, net.ErrClosed) {
							continue // an ICMP error of the host's: go on
						}
						break
					}
					pc.WriteTo(rb[:m], peer)
				}
				mu.Lock()
				delete(peers, peer.String())
				mu.Unlock()
				h.Close()
				n.untrack(h)
			}(h, from)
		}
		h.Write(buf[:k])
	}
}

// sync makes the automatic forwards of proto those of ports (pasta's -T
// auto, -U auto), leaving out skip (the host's ports that are forwards
// into the namespace: forwarding them back would loop).
func (n *nsForwards) sync(proto string, ports, skip map[uint16]bool, auto map[NSForward]bool) error {
	var errs []error
	for f := range auto {
		if f.Proto == proto && (!ports[f.NSPort] || skip[f.NSPort]) {
			n.remove(f)
			delete(auto, f)
		}
	}
	for p := range ports {
		f := NSForward{Proto: proto, NSPort: p, HostPort: p}
		if skip[p] || auto[f] {
			continue
		}
		if err := n.add(f); err != nil {
			errs = append(errs, err)
		}
		auto[f] = true // tried once; again only after the port went away
	}
	return errors.Join(errs...)
}

// close stops every forward and connection and waits for the goroutines.
func (n *nsForwards) close() {
	n.mu.Lock()
	n.closed = true
	var all []io.Closer
	for _, socks := range n.active {
		all = append(all, socks...)
	}
	for c := range n.conns {
		all = append(all, c)
	}
	n.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
	n.wg.Wait()
}
