// Package services holds the small built-in services a tapstack host runs
// on its own addresses: echo (RFC 862, port 7) and discard (RFC 863,
// port 9), over TCP and UDP, IPv4 and IPv6, and an iperf3 server (port
// 5201) for stock iperf3 clients. They are applications of the
// sockets package and a first smoke test of a new host.
package services

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack"
)

// ports of the built-in services.
var ports = map[string]int{"echo": 7, "discard": 9, "iperf3": IPerf3Port}

// Port returns the port of the built-in service name, and whether there
// is such a service.
func Port(name string) (int, bool) {
	p, ok := ports[name]
	return p, ok
}

// Names lists the services Start knows, sorted.
func Names() []string {
	var n []string
	for k := range ports {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Server runs services on one stack. Close stops them and waits for every
// goroutine they started.
type Server struct {
	wg   sync.WaitGroup
	idle time.Duration // see IdleTimeout

	mu     sync.Mutex
	socks  map[*sockets.Socket]bool // listeners and connections; protected by mu
	closed bool                     // protected by mu
}

// Start serves the named services on each of st's own addresses (see
// OwnAddrs), TCP and UDP.
func Start(st *stack.Stack, names ...string) (*Server, error) {
	return StartWith(st, Options{}, names...)
}

// Options tune a Server; the zero value of each field is its default.
type Options struct {
	// IdleTimeout ends an echo or discard connection idle this long
	// (IdleTimeout).
	IdleTimeout time.Duration
}

// StartWith is Start with options.
func StartWith(st *stack.Stack, opts Options, names ...string) (*Server, error) {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = IdleTimeout
	}
	s := &Server{socks: make(map[*sockets.Socket]bool), idle: opts.IdleTimeout}
	for _, name := range names {
		port, ok := ports[name]
		if !ok {
			s.Close()
			return nil, fmt.Errorf("unknown service %q (known: %s)", name, strings.Join(Names(), ", "))
		}
		if name == "iperf3" {
			if err := s.startIPerf3(st); err != nil {
				s.Close()
				return nil, fmt.Errorf("service iperf3: %w", err)
			}
			continue
		}
		echo := name == "echo"
		for _, addr := range OwnAddrs(st) {
			for _, typ := range []sockets.Type{sockets.SOCK_STREAM, sockets.SOCK_DGRAM} {
				sock, err := listen(st, addr, typ, port)
				if err != nil {
					s.Close()
					return nil, fmt.Errorf("service %s: %w", name, err)
				}
				if !s.track(sock) {
					return nil, errors.New("server closed")
				}
				s.wg.Add(1)
				if typ == sockets.SOCK_STREAM {
					go s.acceptLoop(sock, echo)
				} else {
					go s.datagramLoop(sock, echo)
				}
			}
		}
	}
	return s, nil
}

// OwnAddrs lists the stack's own addresses, loopback included (IPv6
// link-local ones with their NIC's name as zone): the only
// addresses services bind. On a gateway NIC a socket bound to a wildcard
// address matches packets for any destination on its port, so a service
// on 0.0.0.0:9 would swallow relayed flows to other hosts' port 9.
func OwnAddrs(st *stack.Stack) []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, n := range st.NICs() {
		for _, p := range n.Addrs {
			a := p.Addr()
			if a.Is6() && a.IsLinkLocalUnicast() {
				a = a.WithZone(n.Name)
			}
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out
}

func listen(st *stack.Stack, addr netip.Addr, typ sockets.Type, port int) (*sockets.Socket, error) {
	fam := sockets.AF_INET
	if addr.Is6() {
		fam = sockets.AF_INET6
	}
	sock, err := sockets.New(st, fam, typ, 0)
	if err != nil {
		return nil, err
	}
	if err := sock.SetSockOpt(sockets.SOL_SOCKET, sockets.SO_REUSEADDR, 1); err != nil {
		sock.Close()
		return nil, err
	}
	if err := sock.Bind(sockets.Addr{Host: addr.String(), Port: port}); err != nil {
		sock.Close()
		return nil, err
	}
	if typ == sockets.SOCK_STREAM {
		if err := sock.Listen(sockets.DefaultBacklog); err != nil {
			sock.Close()
			return nil, err
		}
	}
	return sock, nil
}

// track registers a socket for Close; false (and the socket closed) if the
// server is already closed.
func (s *Server) track(sock *sockets.Socket) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		sock.Close()
		return false
	}
	s.socks[sock] = true
	return true
}

func (s *Server) untrack(sock *sockets.Socket) {
	s.mu.Lock()
	delete(s.socks, sock)
	s.mu.Unlock()
	sock.Close()
}

func (s *Server) acceptLoop(ln *sockets.Socket, echo bool) {
	defer s.wg.Done()
	for {
		c, _, err := ln.Accept()
		if err != nil {
			if errors.Is(err, sockets.ErrSocketClosed) {
				return
			}
			// EMFILE and the like: the listener keeps going, after a
			// pause so that a full table does not spin.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !s.track(c) {
			return
		}
		s.wg.Add(1)
		go s.serveConn(c, echo)
	}
}

// IdleTimeout ends an echo or discard connection that moved nothing
// either way for this long (a peer that neither sends nor reads would
// otherwise hold its socket for ever).
const IdleTimeout = 2 * time.Minute

func (s *Server) serveConn(c *sockets.Socket, echo bool) {
	defer s.wg.Done()
	defer s.untrack(c)
	c.SetTimeout(s.idle)
	if echo {
		echoConn(c)
		return
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := c.RecvInto(buf, 0)
		if err != nil || n == 0 {
			return
		}
	}
}

// echoChunks bounds what an echo connection holds between reading and
// writing back: 16 reads of 64 KiB.
const echoChunks = 16

// echoBufs holds the 64 KiB read buffers of the echo services: a TCP
// connection's, which goes back once its bytes are written (a connection
// that echoes a byte at a time allocates nothing), and the UDP echo's,
// large enough for any datagram.
var echoBufs = sync.Pool{New: func() any {
	b := make([]byte, 64<<10)
	return &b
}}

// echoConn sends back what c receives. It keeps reading while a peer
// that is slow to read holds the answer back, up to echoChunks reads,
// so that its receive window stays open while it writes. While nothing
// waits to be written, the reader writes back itself, without handing
// the bytes to the writer (a request/response costs no hand-off).
func echoConn(c *sockets.Socket) {
	type chunk struct {
		buf  *[]byte
		from int
		n    int
	}
	chunks := make(chan chunk, echoChunks)
	done := make(chan struct{})   // the writer has ended
	failed := make(chan struct{}) // a write failed: the reader stops
	// queued counts the chunks handed to the writer and not yet written;
	// only the reader adds to it, so at 0 the writer is idle until the
	// reader hands it another.
	var queued atomic.Int32
	go func() {
		defer close(done)
		ok := true
		for ch := range chunks {
			if ok {
				if _, err := c.SendAll((*ch.buf)[ch.from:ch.n], 0); err != nil {
					ok = false
					close(failed)
				}
			}
			echoBufs.Put(ch.buf)
			queued.Add(-1)
		}
	}()
	defer func() {
		close(chunks)
		<-done
	}()
	for {
		buf := echoBufs.Get().(*[]byte)
		n, err := c.RecvInto(*buf, 0)
		if err != nil || n == 0 {
			echoBufs.Put(buf)
			return
		}
		from := 0
		if queued.Load() == 0 {
			m, err := c.Send((*buf)[:n], sockets.MSG_DONTWAIT)
			if err != nil && !errors.Is(err, syscall.EAGAIN) {
				echoBufs.Put(buf)
				return
			}
			if from = m; from == n {
				echoBufs.Put(buf)
				continue
			}
		}
		queued.Add(1)
		select {
		case chunks <- chunk{buf, from, n}:
		case <-failed:
			echoBufs.Put(buf)
			return
		}
	}
}

func (s *Server) datagramLoop(sock *sockets.Socket, echo bool) {
	defer s.wg.Done()
	if !echo {
		// A datagram is consumed whole however little of it is read.
		var b [1]byte
		for {
			if _, _, err := sock.RecvFromInto(b[:], 0); errors.Is(err, sockets.ErrSocketClosed) {
				return
			}
		}
	}
	// The echo waits for datagrams without a buffer and takes one from
	// echoBufs only while it has datagrams to answer.
	pfd := []sockets.PollFD{{Socket: sock, Events: sockets.POLLIN}}
	for {
		if _, err := sockets.Poll(pfd, -1); err != nil || pfd[0].Revents&sockets.POLLNVAL != 0 {
			return
		}
		bp := echoBufs.Get().(*[]byte)
		for {
			n, from, err := sock.RecvFromInto(*bp, sockets.MSG_DONTWAIT)
			if errors.Is(err, sockets.ErrSocketClosed) {
				echoBufs.Put(bp)
				return
			}
			if err != nil {
				break // nothing more for now (EAGAIN), or a datagram's error
			}
			_, _ = sock.SendTo((*bp)[:n], 0, from)
		}
		echoBufs.Put(bp)
	}
}

// Close stops every service and waits for their goroutines. It is
// idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	socks := s.socks
	s.socks = map[*sockets.Socket]bool{}
	s.mu.Unlock()
	for sock := range socks {
		sock.Close()
	}
	s.wg.Wait()
}
