package sockets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/tapstack/tapstack/stack"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Conn is a connected stream socket as a net.Conn. Read returns io.EOF at
// the end of the stream; errors satisfy net.Error, time-outs match
// os.ErrDeadlineExceeded and calls after Close match net.ErrClosed.
type Conn struct {
	s *Socket
}

var _ net.Conn = (*Conn)(nil)

// NewConn wraps a connected SOCK_STREAM socket. The Conn owns it.
func NewConn(s *Socket) *Conn { return &Conn{s: s} }

// Socket returns the socket under the Conn.
func (c *Conn) Socket() *Socket { return c.s }

// Read implements net.Conn.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, err := c.s.RecvInto(b, 0)
	if err != nil {
		return n, renameOp(err, "read")
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// DrainTo writes what the stream receives to w until the stream ends,
// straight from the stack's receive buffers: no buffer of its own is
// held, not even while it waits, and each byte is copied once. It
// returns nil at the end of the stream. An error of w's ends it and is
// returned as is, with the bytes w accepted consumed and the rest left
// to read. With MSG_DONTWAIT in flags it never waits: it returns an
// EAGAIN error once nothing is left to read for now (wait with Poll);
// that error names no operation or address, as it is the usual end of
// a call in an event loop and costs nothing to make.
//
// w must not block: the connection cannot process what arrives (ACKs
// included) while w.Write runs, so a w that waits on this connection's
// progress (an echo into the same Conn, a full pipe) waits forever.
// A w over a non-blocking descriptor takes what fits and fails for the
// rest; the caller waits for room and calls DrainTo again. It is not
// WriteTo on purpose: io.Copy must not pick it for any writer.
func (c *Conn) DrainTo(w io.Writer, flags int) (int64, error) {
	s := c.s
	if flags&^MSG_DONTWAIT != 0 {
		return 0, renameOp(s.opError("read", nil, errnoErr(syscall.EOPNOTSUPP, fmt.Sprintf("operation not supported: DrainTo flags %#x", flags))), "read")
	}
	s.readMu.Lock()
	defer s.readMu.Unlock()
	cw := errWriters.Get().(*errWriter)
	*cw = errWriter{w: w}
	defer func() {
		*cw = errWriter{}
		errWriters.Put(cw)
	}()
	var total int64
	for {
		if s.isClosed() {
			return total, renameOp(s.opError("read", nil, errClosed), "read")
		}
		var res tcpip.ReadResult
		err := s.do(waiter.ReadableEvents, true, flags, func() tcpip.Error {
			var terr tcpip.Error
			res, terr = s.ep.Read(cw, tcpip.ReadOptions{})
			return terr
		})
		total += int64(res.Count)
		if cw.err != nil {
			return total, cw.err
		}
		if err == errWouldBlock {
			return total, err
		}
		if err != nil {
			return total, renameOp(s.opError("read", nil, err), "read")
		}
		if res.Count == 0 {
			return total, nil
		}
	}
}

// errWriters are DrainTo's (one per call escaped to the heap: an
// allocation per call).
var errWriters = sync.Pool{New: func() any { return new(errWriter) }}

// errWriter keeps the first error of w, which gVisor would turn into
// ErrBadBuffer.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(b []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(b)
	e.err = err
	return n, err
}

// Write implements net.Conn.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.s.SendAll(b, 0)
	return n, renameOp(err, "write")
}

// Close implements net.Conn.
func (c *Conn) Close() error { return c.s.Close() }

// CloseWrite shuts down the sending side, as (*net.TCPConn).CloseWrite.
func (c *Conn) CloseWrite() error { return c.s.Shutdown(SHUT_WR) }

// CloseRead shuts down the receiving side.
func (c *Conn) CloseRead() error { return c.s.Shutdown(SHUT_RD) }

// LocalAddr implements net.Conn with a *net.TCPAddr.
func (c *Conn) LocalAddr() net.Addr {
	a, _ := c.s.localAddr()
	return toNetAddr(c.s.st, SOCK_STREAM, a)
}

// RemoteAddr implements net.Conn with a *net.TCPAddr.
func (c *Conn) RemoteAddr() net.Addr {
	a, _ := c.s.peerAddr()
	return toNetAddr(c.s.st, SOCK_STREAM, a)
}

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error { return c.s.SetDeadline(t) }

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.s.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.s.SetWriteDeadline(t) }

// renameOp gives a socket error net's operation name.
func renameOp(err error, op string) error {
	if err == nil {
		return nil // errors.As would move oe to the heap: a call's allocation
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		c := *oe
		c.Op = op
		return &c
	}
	return err
}

// toNetAddr converts an Addr to the *net.TCPAddr or *net.UDPAddr net uses,
// with the NIC's name as the zone of a link-local address.
func toNetAddr(st *stack.Stack, t Type, a Addr) net.Addr {
	ip := net.ParseIP(a.Host)
	zone := ""
	if a.ScopeID != 0 {
		zone = strconv.Itoa(int(a.ScopeID))
		if st != nil {
			if n, ok := st.NICByID(nicID(a.ScopeID)); ok {
				zone = n.Name
			}
		}
	}
	if t == SOCK_STREAM {
		return &net.TCPAddr{IP: ip, Port: a.Port, Zone: zone}
	}
	return &net.UDPAddr{IP: ip, Port: a.Port, Zone: zone}
}

// fromNetAddr converts a net.Addr (TCP, UDP or our Addr) to an Addr.
func fromNetAddr(a net.Addr) (Addr, error) {
	switch v := a.(type) {
	case Addr:
		return v, nil
	case *Addr:
		return *v, nil
	case *net.UDPAddr:
		return ipAddr(v.IP, v.Zone, v.Port), nil
	case *net.TCPAddr:
		return ipAddr(v.IP, v.Zone, v.Port), nil
	}
	return Addr{}, errnoErr(syscall.EINVAL, fmt.Sprintf("invalid argument: address of type %T", a))
}

func ipAddr(ip net.IP, zone string, port int) Addr {
	h := ip.String()
	if zone != "" {
		h += "%" + zone
	}
	return Addr{Host: h, Port: port}
}

// Listener is a listening stream socket as a net.Listener.
type Listener struct {
	s *Socket
}

var _ net.Listener = (*Listener)(nil)

// NewListener wraps a listening SOCK_STREAM socket. The Listener owns it.
func NewListener(s *Socket) *Listener { return &Listener{s: s} }

// Socket returns the socket under the Listener.
func (l *Listener) Socket() *Socket { return l.s }

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	c, _, err := l.s.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c), nil
}

// Close implements net.Listener.
func (l *Listener) Close() error { return l.s.Close() }

// Addr implements net.Listener.
func (l *Listener) Addr() net.Addr {
	a, _ := l.s.localAddr()
	return toNetAddr(l.s.st, SOCK_STREAM, a)
}

// PacketConn is a datagram socket as a net.PacketConn, and when connected
// also as a net.Conn.
type PacketConn struct {
	s *Socket
}

var (
	_ net.PacketConn = (*PacketConn)(nil)
	_ net.Conn       = (*PacketConn)(nil)
)

// NewPacketConn wraps a SOCK_DGRAM socket. The PacketConn owns it.
func NewPacketConn(s *Socket) *PacketConn { return &PacketConn{s: s} }

// Socket returns the socket under the PacketConn.
func (p *PacketConn) Socket() *Socket { return p.s }

// ReadFrom implements net.PacketConn; the address is a *net.UDPAddr.
func (p *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := p.s.RecvFromInto(b, 0)
	if err != nil {
		return n, nil, renameOp(err, "read")
	}
	return n, toNetAddr(p.s.st, SOCK_DGRAM, from), nil
}

// WriteTo implements net.PacketConn; addr is a *net.UDPAddr or an Addr.
func (p *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	a, err := fromNetAddr(addr)
	if err != nil {
		return 0, &net.OpError{Op: "write", Net: p.s.network(), Addr: addr, Err: err}
	}
	n, err := p.s.SendTo(b, 0, a)
	return n, renameOp(err, "write")
}

// Read implements net.Conn for a connected datagram socket.
func (p *PacketConn) Read(b []byte) (int, error) {
	n, err := p.s.RecvInto(b, 0)
	return n, renameOp(err, "read")
}

// Write implements net.Conn for a connected datagram socket.
func (p *PacketConn) Write(b []byte) (int, error) {
	n, err := p.s.Send(b, 0)
	return n, renameOp(err, "write")
}

// Close implements net.PacketConn.
func (p *PacketConn) Close() error { return p.s.Close() }

// LocalAddr implements net.PacketConn.
func (p *PacketConn) LocalAddr() net.Addr {
	a, _ := p.s.localAddr()
	return toNetAddr(p.s.st, SOCK_DGRAM, a)
}

// RemoteAddr implements net.Conn; nil when not connected.
func (p *PacketConn) RemoteAddr() net.Addr {
	a, err := p.s.peerAddr()
	if err != nil {
		return nil
	}
	return toNetAddr(p.s.st, SOCK_DGRAM, a)
}

// SetDeadline implements net.PacketConn.
func (p *PacketConn) SetDeadline(t time.Time) error { return p.s.SetDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (p *PacketConn) SetReadDeadline(t time.Time) error { return p.s.SetReadDeadline(t) }

// SetWriteDeadline implements net.PacketConn.
func (p *PacketConn) SetWriteDeadline(t time.Time) error { return p.s.SetWriteDeadline(t) }

// parseNetwork maps net's network names to a family and type.
func parseNetwork(network string) (Family, Type, error) {
	switch network {
	case "tcp":
		return AF_UNSPEC, SOCK_STREAM, nil
	case "tcp4":
		return AF_INET, SOCK_STREAM, nil
	case "tcp6":
		return AF_INET6, SOCK_STREAM, nil
	case "udp":
		return AF_UNSPEC, SOCK_DGRAM, nil
	case "udp4":
		return AF_INET, SOCK_DGRAM, nil
	case "udp6":
		return AF_INET6, SOCK_DGRAM, nil
	}
	return 0, 0, net.UnknownNetworkError(network)
}

func splitHostPort(network, address string) (string, string, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return "", "", &net.OpError{Op: "dial", Net: network, Err: err}
	}
	return host, port, nil
}

// Dial connects to address over st, as net.Dialer.DialContext does: network
// is tcp, tcp4, tcp6, udp, udp4 or udp6; the host may be a name, resolved
// with GetAddrInfo; each address is tried in turn until one connects. ctx
// bounds the whole call. A stream gives a *Conn, a datagram network a
// *PacketConn.
func Dial(ctx context.Context, st *stack.Stack, network, address string) (net.Conn, error) {
	fam, typ, err := parseNetwork(network)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	host, port, err := splitHostPort(network, address)
	if err != nil {
		return nil, err
	}
	ais, err := GetAddrInfoContext(ctx, st, host, port, fam, typ, 0, 0)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var first error
	for _, ai := range ais {
		c, err := dialOne(ctx, st, ai)
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

func dialOne(ctx context.Context, st *stack.Stack, ai AddrInfo) (net.Conn, error) {
	s, err := New(st, ai.Family, ai.Type, 0)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() {
		_ = s.SetDeadline(time.Unix(1, 0))
	})
	err = s.Connect(ai.Addr)
	if !stop() || ctx.Err() != nil {
		if err == nil {
			err = ctx.Err()
		} else {
			err = &net.OpError{Op: "dial", Net: s.network(), Addr: ai.Addr, Err: ctx.Err()}
		}
	}
	if err != nil {
		s.Close()
		return nil, renameOp(err, "dial")
	}
	_ = s.SetDeadline(time.Time{})
	if ai.Type == SOCK_STREAM {
		return NewConn(s), nil
	}
	return NewPacketConn(s), nil
}

// listenSocket makes a bound socket for Listen and ListenPacket. An empty
// host on tcp/udp is the dual-stack wildcard "::".
func listenSocket(st *stack.Stack, network, address string) (*Socket, error) {
	fam, typ, err := parseNetwork(network)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	var a Addr
	if host == "" {
		if fam == AF_UNSPEC {
			fam = AF_INET6
		}
		p, perr := parseService(port, typ, 0)
		if perr != nil {
			return nil, &net.OpError{Op: "listen", Net: network, Err: &GAIError{Code: perr.(GAIErrno), Detail: fmt.Sprintf("service %q", port)}}
		}
		a = Addr{Port: p}
		if fam == AF_INET6 {
			a.Host = "::"
		}
	} else {
		ais, err := GetAddrInfo(st, host, port, fam, typ, 0, AI_PASSIVE)
		if err != nil {
			return nil, &net.OpError{Op: "listen", Net: network, Err: err}
		}
		fam, a = ais[0].Family, ais[0].Addr
	}
	s, err := New(st, fam, typ, 0)
	if err != nil {
		return nil, err
	}
	if err := s.SetSockOpt(SOL_SOCKET, SO_REUSEADDR, 1); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.Bind(a); err != nil {
		s.Close()
		return nil, renameOp(err, "listen")
	}
	return s, nil
}

// Listen listens on address over st, as net.Listen: network is tcp, tcp4
// or tcp6; ":port" listens on every address of both families.
func Listen(st *stack.Stack, network, address string) (*Listener, error) {
	if _, typ, err := parseNetwork(network); err != nil || typ != SOCK_STREAM {
		return nil, &net.OpError{Op: "listen", Net: network, Err: net.UnknownNetworkError(network)}
	}
	s, err := listenSocket(st, network, address)
	if err != nil {
		return nil, err
	}
	if err := s.Listen(DefaultBacklog); err != nil {
		s.Close()
		return nil, err
	}
	return NewListener(s), nil
}

// ListenPacket listens for datagrams on address over st, as
// net.ListenPacket: network is udp, udp4 or udp6.
func ListenPacket(st *stack.Stack, network, address string) (*PacketConn, error) {
	if _, typ, err := parseNetwork(network); err != nil || typ != SOCK_DGRAM {
		return nil, &net.OpError{Op: "listen", Net: network, Err: net.UnknownNetworkError(network)}
	}
	s, err := listenSocket(st, network, address)
	if err != nil {
		return nil, err
	}
	return NewPacketConn(s), nil
}

// AddrPortOf returns the netip form of a net.Addr from these adapters.
func AddrPortOf(a net.Addr) (netip.AddrPort, error) {
	x, err := fromNetAddr(a)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return x.AddrPort()
}
