package sockets

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tapstack/tapstack/stack"
)

// Blocking is the timeout of a blocking socket (Python's settimeout(None)).
const Blocking time.Duration = -1

// DefaultBacklog is the backlog Listen uses for a negative argument.
const DefaultBacklog = 128

// minBacklog is the smallest queue Listen gives a stream socket (see
// Listen).
const minBacklog = 1024

// Socket is one endpoint of a network conversation on a tapstack host: an
// address, a port and a protocol, like Python's socket.socket. Its methods
// are safe for concurrent use; concurrent sends (and concurrent receives)
// on a stream socket are serialised.
type Socket struct {
	st     *stack.Stack
	tbl    *table
	fd     int
	family Family
	typ    Type
	proto  int

	ep      tcpip.Endpoint
	wq      *waiter.Queue
	created time.Time
	site    site // where it was made, if its table records sites

	timeout atomic.Int64 // nanoseconds; Blocking for none
	rdl     atomic.Int64 // read deadline, unix nanoseconds; 0 for none
	wdl     atomic.Int64 // write deadline

	readMu  sync.Mutex // serialises receives on stream sockets
	writeMu sync.Mutex // serialises sends on stream sockets

	mu        sync.Mutex
	listening bool // protected by mu
	closed    bool // protected by mu
	closing   chan struct{}
}

// New creates a socket on st: Python's socket.socket(family, type, proto).
// proto 0 picks TCP for SOCK_STREAM and UDP for SOCK_DGRAM. It takes one
// slot of the stack's socket table, until Close.
func New(st *stack.Stack, family Family, typ Type, proto int) (*Socket, error) {
	netProto, transProto, err := protocols(family, typ, proto)
	if err != nil {
		return nil, &net.OpError{Op: "socket", Net: netName(family, typ), Err: err}
	}
	if proto == 0 {
		proto = int(transProto)
	}
	tbl := tableOf(st)
	fd, err := tbl.reserve()
	if err != nil {
		return nil, &net.OpError{Op: "socket", Net: netName(family, typ), Err: err}
	}
	wq := new(waiter.Queue)
	ep, terr := st.GV().NewEndpoint(transProto, netProto, wq)
	if terr != nil {
		tbl.release(fd)
		return nil, &net.OpError{Op: "socket", Net: netName(family, typ), Err: fromTCPIP(terr)}
	}
	if family == AF_INET6 {
		// Linux's default: dual-stack, IPv4 peers appear as ::ffff:a.b.c.d.
		ep.SocketOptions().SetV6Only(false)
	}
	s, err := newSocket(st, tbl, fd, family, typ, proto, ep, wq)
	if err != nil {
		return nil, &net.OpError{Op: "socket", Net: netName(family, typ), Err: err}
	}
	return s, nil
}

// Adopt makes a socket of an endpoint that gVisor creates for a flow it
// caught itself (a transport forwarder's request), for a package that
// relays such flows. It reserves a slot of the socket table first and
// fails with EMFILE, without calling create, when the table is full;
// otherwise create makes the endpoint on the queue it is given.
func Adopt(st *stack.Stack, family Family, typ Type, create func(*waiter.Queue) (tcpip.Endpoint, tcpip.Error)) (*Socket, error) {
	_, transProto, err := protocols(family, typ, 0)
	if err != nil {
		return nil, err
	}
	tbl := tableOf(st)
	fd, err := tbl.reserve()
	if err != nil {
		return nil, err
	}
	wq := new(waiter.Queue)
	ep, terr := create(wq)
	if terr != nil {
		tbl.release(fd)
		return nil, fromTCPIP(terr)
	}
	return newSocket(st, tbl, fd, family, typ, int(transProto), ep, wq)
}

// errStackClosed is what a socket made while its stack closes fails with.
var errStackClosed = errnoErr(syscall.ENETDOWN, "network is down: the stack is closed")

// newSocket puts a socket for ep in the slot fd reserved. If the stack
// closed since the reservation, it closes ep and fails with ENETDOWN: a
// socket never outlives its stack's Close.
func newSocket(st *stack.Stack, tbl *table, fd int, family Family, typ Type, proto int, ep tcpip.Endpoint, wq *waiter.Queue) (*Socket, error) {
	s := &Socket{
		st: st, tbl: tbl, fd: fd, family: family, typ: typ, proto: proto,
		ep: ep, wq: wq, created: time.Now(), closing: make(chan struct{}),
	}
	if tbl.sites {
		s.site = callerSite()
	}
	s.timeout.Store(int64(Blocking))
	if !tbl.fill(fd, s) {
		ep.Abort()
		return nil, errStackClosed
	}
	return s, nil
}

// protocols checks a (family, type, proto) triple like Linux's socket(2).
func protocols(family Family, typ Type, proto int) (tcpip.NetworkProtocolNumber, tcpip.TransportProtocolNumber, error) {
	var np tcpip.NetworkProtocolNumber
	switch family {
	case AF_INET:
		np = ipv4.ProtocolNumber
	case AF_INET6:
		np = ipv6.ProtocolNumber
	default:
		return 0, 0, errnoErr(syscall.EAFNOSUPPORT, fmt.Sprintf("address family not supported by protocol: %v (use AF_INET or AF_INET6)", family))
	}
	switch typ {
	case SOCK_STREAM:
		if proto != 0 && proto != IPPROTO_TCP {
			return 0, 0, errnoErr(syscall.EPROTONOSUPPORT, fmt.Sprintf("protocol not supported: %d with SOCK_STREAM (use 0 or IPPROTO_TCP)", proto))
		}
		return np, tcp.ProtocolNumber, nil
	case SOCK_DGRAM:
		if proto != 0 && proto != IPPROTO_UDP {
			return 0, 0, errnoErr(syscall.EPROTONOSUPPORT, fmt.Sprintf("protocol not supported: %d with SOCK_DGRAM (use 0 or IPPROTO_UDP)", proto))
		}
		return np, udp.ProtocolNumber, nil
	}
	return 0, 0, errnoErr(syscall.ESOCKTNOSUPPORT, fmt.Sprintf("socket type not supported: %v (use SOCK_STREAM or SOCK_DGRAM)", typ))
}

func netName(f Family, t Type) string {
	n := "udp"
	if t == SOCK_STREAM {
		n = "tcp"
	}
	if f == AF_INET6 {
		n += "6"
	} else if f == AF_INET {
		n += "4"
	}
	return n
}

func (s *Socket) network() string { return netName(s.family, s.typ) }

// Family returns the address family (Python's socket.family).
func (s *Socket) Family() Family { return s.family }

// Type returns the socket type (Python's socket.type).
func (s *Socket) Type() Type { return s.typ }

// Proto returns the protocol number (Python's socket.proto).
func (s *Socket) Proto() int { return s.proto }

// Stack returns the stack the socket lives on.
func (s *Socket) Stack() *stack.Stack { return s.st }

// Fileno returns the socket's slot number in the stack's table: Python's
// fileno(). It is -1 after Close. It is not an OS file descriptor.
func (s *Socket) Fileno() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return -1
	}
	return s.fd
}

func (s *Socket) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close releases the socket: Python's close(). The table slot is free when
// it returns; a call blocked in another goroutine returns EBADF
// (errors.Is(err, net.ErrClosed) holds). It is idempotent.
func (s *Socket) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.ep.Close()
	s.wq.Notify(waiter.EventIn | waiter.EventOut | waiter.EventHUp | waiter.EventErr)
	s.tbl.release(s.fd)
	return nil
}

// Bind claims a local address: Python's bind((host, port)).
func (s *Socket) Bind(addr Addr) error {
	if s.isClosed() {
		return s.opError("bind", addr, errClosed)
	}
	fa, err := parseAddr(s.st, s.family, addr, useBind)
	if err != nil {
		return s.opError("bind", addr, err)
	}
	if fa.Addr.Len() == 16 && isV4Mapped(fa.Addr) && s.ep.SocketOptions().GetV6Only() {
		return s.opError("bind", addr, errnoErr(syscall.EADDRNOTAVAIL, "cannot assign requested address: IPv4-mapped address on an IPV6_V6ONLY socket"))
	}
	if terr := s.ep.Bind(fa); terr != nil {
		return s.opError("bind", addr, fromTCPIP(terr))
	}
	return nil
}

// Listen makes a stream socket accept connections: Python's listen(backlog).
// A negative backlog means DefaultBacklog. An unbound socket gets an
// ephemeral port on the wildcard address first, as on Linux.
//
// The queue holds at least minBacklog (1024) connections whatever the
// backlog, as Linux's SYN queue (tcp_max_syn_backlog) does: gVisor sizes
// its queue of half-open connections from the backlog and answers with
// SYN cookies once it is full, so a burst of 300 clients against backlog
// 128 went to cookies, and a cookie connection whose last handshake ACK
// met a full accept queue was reset when its data came. A handshake that
// does not fit the queue is dropped and the client retransmits, as on
// Linux.
func (s *Socket) Listen(backlog int) error {
	if s.isClosed() {
		return s.opError("listen", nil, errClosed)
	}
	if s.typ != SOCK_STREAM {
		return s.opError("listen", nil, errnoErr(syscall.EOPNOTSUPP, "operation not supported: listen needs a SOCK_STREAM socket"))
	}
	if backlog < 0 {
		backlog = DefaultBacklog
	}
	if terr := s.ep.Listen(max(backlog, minBacklog)); terr != nil {
		return s.opError("listen", nil, fromTCPIP(terr))
	}
	s.mu.Lock()
	s.listening = true
	s.mu.Unlock()
	return nil
}

// Accept waits for a connection: Python's accept(), which returns the new
// socket and the peer's address. The new socket is blocking. When the
// socket table is full it fails with EMFILE and leaves the connection
// queued, so a later Accept (after a Close) gets it.
func (s *Socket) Accept() (*Socket, Addr, error) {
	if s.isClosed() {
		return nil, Addr{}, s.opError("accept", nil, errClosed)
	}
	s.mu.Lock()
	listening := s.listening
	s.mu.Unlock()
	if !listening {
		return nil, Addr{}, s.opError("accept", nil, errnoErr(syscall.EINVAL, "invalid argument: accept needs a listening socket (call Listen first)"))
	}
	for {
		err := s.do(waiter.ReadableEvents, true, 0, func() tcpip.Error {
			if s.ep.Readiness(waiter.ReadableEvents) == 0 {
				return &tcpip.ErrWouldBlock{}
			}
			return nil
		})
		if err != nil {
			return nil, Addr{}, s.opError("accept", nil, err)
		}
		// Take a slot before dequeuing, so that a full table leaves the
		// connection queued.
		fd, err := s.tbl.reserve()
		if err != nil {
			return nil, Addr{}, s.opError("accept", nil, err)
		}
		var peer tcpip.FullAddress
		nep, nwq, terr := s.ep.Accept(&peer)
		if terr != nil {
			s.tbl.release(fd)
			if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
				continue // another goroutine took it
			}
			return nil, Addr{}, s.opError("accept", nil, s.mapErr(terr))
		}
		ns, err := newSocket(s.st, s.tbl, fd, s.family, s.typ, s.proto, nep, nwq)
		if err != nil {
			return nil, Addr{}, s.opError("accept", nil, err)
		}
		return ns, fromFull(s.family, peer), nil
	}
}

// Connect connects to a remote address: Python's connect((host, port)). A
// stream socket in non-blocking mode returns EINPROGRESS; Poll for
// POLLOUT, then read SO_ERROR. A datagram socket just records the peer.
func (s *Socket) Connect(addr Addr) error {
	if s.isClosed() {
		return s.opError("connect", addr, errClosed)
	}
	fa, err := parseAddr(s.st, s.family, addr, useRemote)
	if err != nil {
		return s.opError("connect", addr, err)
	}
	if s.typ == SOCK_DGRAM {
		if terr := s.ep.Connect(fa); terr != nil {
			return s.opError("connect", addr, fromTCPIP(terr))
		}
		return nil
	}
	terr := s.ep.Connect(fa)
	switch terr.(type) {
	case nil:
		return nil
	case *tcpip.ErrConnectStarted, *tcpip.ErrAlreadyConnecting:
	default:
		return s.opError("connect", addr, fromTCPIP(terr))
	}
	if _, nonblock := s.deadline(false, 0, time.Time{}); nonblock {
		if _, ok := terr.(*tcpip.ErrAlreadyConnecting); ok {
			return s.opError("connect", addr, syscall.EALREADY)
		}
		return s.opError("connect", addr, syscall.EINPROGRESS)
	}
	err = s.do(waiter.WritableEvents, false, 0, func() tcpip.Error {
		switch tcp.EndpointState(s.ep.State()) {
		case tcp.StateSynSent, tcp.StateConnecting, tcp.StateInitial, tcp.StateBound:
			return &tcpip.ErrWouldBlock{}
		}
		return nil
	})
	if err != nil {
		return s.opError("connect", addr, err)
	}
	// Connecting again reports the outcome, as gVisor's own socket
	// layer does: nil once, and the hard error of a failed attempt.
	if terr := s.ep.Connect(fa); terr != nil {
		if _, ok := terr.(*tcpip.ErrConnectionAborted); ok {
			if le := s.ep.LastError(); le != nil {
				terr = le
			}
		}
		return s.opError("connect", addr, fromTCPIP(terr))
	}
	return nil
}

// ConnectEx is Python's connect_ex: Connect, returning the errno instead of
// an error (0 on success, EINPROGRESS for a non-blocking start).
func (s *Socket) ConnectEx(addr Addr) syscall.Errno {
	return errnoOf(s.Connect(addr))
}

// Send sends data on a connected socket: Python's send(data[, flags]). It
// returns how many bytes were taken, which for a stream socket may be
// fewer than len(b). Flags: MSG_DONTWAIT.
func (s *Socket) Send(b []byte, flags int) (int, error) {
	if s.typ == SOCK_STREAM {
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
	}
	n, err := s.send(b, nil, flags)
	return n, s.opError("send", nil, err)
}

// SendAll sends all of b: Python's sendall(data[, flags]). On error some
// data may have been sent; the count says how much.
func (s *Socket) SendAll(b []byte, flags int) (int, error) {
	if s.typ == SOCK_STREAM {
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
	}
	total := 0
	for {
		n, err := s.send(b[total:], nil, flags)
		total += n
		if err != nil {
			return total, s.opError("sendall", nil, err)
		}
		if total >= len(b) {
			return total, nil
		}
	}
}

// SendTo sends a datagram to addr: Python's sendto(data[, flags], address).
func (s *Socket) SendTo(b []byte, flags int, addr Addr) (int, error) {
	fa, err := parseAddr(s.st, s.family, addr, useRemote)
	if err != nil {
		return 0, s.opError("sendto", addr, err)
	}
	if s.typ == SOCK_STREAM {
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
	}
	n, err := s.send(b, &fa, flags)
	return n, s.opError("sendto", addr, err)
}

func (s *Socket) send(b []byte, to *tcpip.FullAddress, flags int) (int, error) {
	if s.isClosed() {
		return 0, errClosed
	}
	if flags&^(MSG_DONTWAIT) != 0 {
		return 0, errnoErr(syscall.EOPNOTSUPP, fmt.Sprintf("operation not supported: send flags %#x", flags))
	}
	r := payloads.Get().(*bytes.Reader)
	defer payloads.Put(r)
	var n int64
	err := s.do(waiter.WritableEvents, false, flags, func() tcpip.Error {
		r.Reset(b)
		var terr tcpip.Error
		n, terr = s.ep.Write(r, tcpip.WriteOptions{To: to})
		return terr
	})
	r.Reset(nil) // the pool keeps no caller's buffer
	return int(n), err
}

// payloads are the readers send hands gVisor (one per call escaped to
// the heap: an allocation per send).
var payloads = sync.Pool{New: func() any { return new(bytes.Reader) }}

// Recv receives up to bufsize bytes: Python's recv(bufsize[, flags]). At
// the end of a stream it returns an empty slice and no error, as Python
// returns b"". Flags: MSG_PEEK, MSG_DONTWAIT, MSG_WAITALL.
func (s *Socket) Recv(bufsize int, flags int) ([]byte, error) {
	if bufsize < 0 {
		return nil, s.opError("recv", nil, errnoErr(syscall.EINVAL, "negative buffer size"))
	}
	b := make([]byte, bufsize)
	n, _, err := s.recv("recv", b, flags, false)
	return b[:n], err
}

// RecvInto receives into b: Python's recv_into(buffer[, nbytes[, flags]]).
// It returns 0 and no error at the end of a stream.
func (s *Socket) RecvInto(b []byte, flags int) (int, error) {
	n, _, err := s.recv("recv_into", b, flags, false)
	return n, err
}

// RecvFrom receives a datagram and its sender: Python's
// recvfrom(bufsize[, flags]). A datagram longer than bufsize is truncated
// and the rest discarded, as on Linux.
func (s *Socket) RecvFrom(bufsize int, flags int) ([]byte, Addr, error) {
	if bufsize < 0 {
		return nil, Addr{}, s.opError("recvfrom", nil, errnoErr(syscall.EINVAL, "negative buffer size"))
	}
	b := make([]byte, bufsize)
	n, from, err := s.recv("recvfrom", b, flags, true)
	return b[:n], from, err
}

// RecvFromInto is Python's recvfrom_into(buffer[, nbytes[, flags]]).
func (s *Socket) RecvFromInto(b []byte, flags int) (int, Addr, error) {
	return s.recv("recvfrom_into", b, flags, true)
}

func (s *Socket) recv(op string, b []byte, flags int, needAddr bool) (int, Addr, error) {
	if s.isClosed() {
		return 0, Addr{}, s.opError(op, nil, errClosed)
	}
	if flags&^(MSG_PEEK|MSG_DONTWAIT|MSG_WAITALL) != 0 {
		return 0, Addr{}, s.opError(op, nil, errnoErr(syscall.EOPNOTSUPP, fmt.Sprintf("operation not supported: recv flags %#x", flags)))
	}
	if s.typ == SOCK_STREAM {
		s.readMu.Lock()
		defer s.readMu.Unlock()
	}
	total := 0
	var from tcpip.FullAddress
	// One writer per call, not per try: it escapes to the heap through
	// gVisor's io.Writer, and each wait-and-try cost an allocation.
	var w tcpip.SliceWriter
	for {
		var res tcpip.ReadResult
		err := s.do(waiter.ReadableEvents, true, flags, func() tcpip.Error {
			w = tcpip.SliceWriter(b[total:])
			var terr tcpip.Error
			res, terr = s.ep.Read(&w, tcpip.ReadOptions{Peek: flags&MSG_PEEK != 0, NeedRemoteAddr: needAddr})
			return terr
		})
		if err != nil {
			if total > 0 {
				return total, fromFull(s.family, from), nil
			}
			return 0, Addr{}, s.opError(op, nil, err)
		}
		if total == 0 {
			from = res.RemoteAddr
		}
		total += res.Count
		if res.Count == 0 || flags&MSG_WAITALL == 0 || s.typ != SOCK_STREAM || total >= len(b) || flags&MSG_PEEK != 0 {
			break
		}
	}
	var a Addr
	if needAddr {
		a = fromFull(s.family, from)
	}
	return total, a, nil
}

// Shutdown shuts down one or both halves: Python's shutdown(how) with
// SHUT_RD, SHUT_WR or SHUT_RDWR.
func (s *Socket) Shutdown(how int) error {
	if s.isClosed() {
		return s.opError("shutdown", nil, errClosed)
	}
	var f tcpip.ShutdownFlags
	switch how {
	case SHUT_RD:
		f = tcpip.ShutdownRead
	case SHUT_WR:
		f = tcpip.ShutdownWrite
	case SHUT_RDWR:
		f = tcpip.ShutdownRead | tcpip.ShutdownWrite
	default:
		return s.opError("shutdown", nil, errnoErr(syscall.EINVAL, fmt.Sprintf("invalid argument: how=%d (use SHUT_RD, SHUT_WR or SHUT_RDWR)", how)))
	}
	if terr := s.ep.Shutdown(f); terr != nil {
		return s.opError("shutdown", nil, fromTCPIP(terr))
	}
	return nil
}

// GetSockName returns the local address: Python's getsockname().
func (s *Socket) GetSockName() (Addr, error) {
	if s.isClosed() {
		return Addr{}, s.opError("getsockname", nil, errClosed)
	}
	a, err := s.localAddr()
	if err != nil {
		return Addr{}, &net.OpError{Op: "getsockname", Net: s.network(), Err: err}
	}
	return a, nil
}

func (s *Socket) localAddr() (Addr, error) {
	fa, terr := s.ep.GetLocalAddress()
	if terr != nil {
		return Addr{}, fromTCPIP(terr)
	}
	return fromFull(s.family, fa), nil
}

// GetPeerName returns the remote address: Python's getpeername(). It
// fails with ENOTCONN when the socket is not connected.
func (s *Socket) GetPeerName() (Addr, error) {
	if s.isClosed() {
		return Addr{}, &net.OpError{Op: "getpeername", Net: s.network(), Err: errClosed}
	}
	a, err := s.peerAddr()
	if err != nil {
		return Addr{}, &net.OpError{Op: "getpeername", Net: s.network(), Err: err}
	}
	return a, nil
}

func (s *Socket) peerAddr() (Addr, error) {
	fa, terr := s.ep.GetRemoteAddress()
	if terr != nil {
		return Addr{}, fromTCPIP(terr)
	}
	return fromFull(s.family, fa), nil
}

// state names the socket's state for listings.
func (s *Socket) state() string {
	if s.typ == SOCK_STREAM {
		return tcp.EndpointState(s.ep.State()).String()
	}
	if _, err := s.ep.GetRemoteAddress(); err == nil {
		return "CONNECTED"
	}
	if fa, err := s.ep.GetLocalAddress(); err == nil && fa.Port != 0 {
		return "BOUND"
	}
	return "INITIAL"
}

// SetTimeout sets the timeout of blocking calls: Python's settimeout. A
// positive d makes calls fail with a timeout error (net.Error.Timeout()
// is true) after d; 0 makes the socket non-blocking (EAGAIN); Blocking
// (any negative d) makes calls wait for ever.
func (s *Socket) SetTimeout(d time.Duration) {
	if d < 0 {
		d = Blocking
	}
	s.timeout.Store(int64(d))
}

// GetTimeout returns the timeout: Python's gettimeout(). Blocking (-1)
// stands for Python's None.
func (s *Socket) GetTimeout() time.Duration { return time.Duration(s.timeout.Load()) }

// SetBlocking is Python's setblocking(flag): true is SetTimeout(Blocking),
// false is SetTimeout(0).
func (s *Socket) SetBlocking(block bool) {
	if block {
		s.SetTimeout(Blocking)
	} else {
		s.SetTimeout(0)
	}
}

// GetBlocking is Python's getblocking().
func (s *Socket) GetBlocking() bool { return s.GetTimeout() != 0 }

// SetReadDeadline sets an absolute deadline for receives and Accept, on
// top of the timeout (the earlier wins), as net.Conn does. Zero clears it.
func (s *Socket) SetReadDeadline(t time.Time) error {
	s.rdl.Store(unixNano(t))
	s.wq.Notify(waiter.ReadableEvents)
	return nil
}

// SetWriteDeadline sets an absolute deadline for sends and Connect.
func (s *Socket) SetWriteDeadline(t time.Time) error {
	s.wdl.Store(unixNano(t))
	s.wq.Notify(waiter.WritableEvents)
	return nil
}

// SetDeadline sets both deadlines.
func (s *Socket) SetDeadline(t time.Time) error {
	_ = s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

func (s *Socket) deadlinePassed(read bool) bool {
	dl := s.wdl.Load()
	if read {
		dl = s.rdl.Load()
	}
	return dl != 0 && time.Now().UnixNano() >= dl
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// deadline returns when a call that started at start must give up (zero:
// never) and whether it must not wait at all: the earlier of the socket's
// timeout counted from start and the net.Conn-style deadline.
func (s *Socket) deadline(read bool, flags int, start time.Time) (time.Time, bool) {
	to := time.Duration(s.timeout.Load())
	if to == 0 || flags&MSG_DONTWAIT != 0 {
		return time.Time{}, true
	}
	var d time.Time
	if to > 0 {
		d = start.Add(to)
	}
	dl := s.wdl.Load()
	if read {
		dl = s.rdl.Load()
	}
	if dl != 0 {
		t := time.Unix(0, dl)
		if d.IsZero() || t.Before(d) {
			d = t
		}
	}
	return d, false
}

// do runs try until it stops reporting ErrWouldBlock, waiting for ev in
// between, within the socket's timeout and deadlines. It is how every
// blocking call is built on gVisor's non-blocking endpoints.
func (s *Socket) do(ev waiter.EventMask, read bool, flags int, try func() tcpip.Error) error {
	// A net.Conn deadline already past fails the call before it starts,
	// as in package net.
	if s.deadlinePassed(read) {
		return errTimedOut
	}
	terr := try()
	if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
		return s.mapErr(terr)
	}
	start := time.Now()
	if _, nonblock := s.deadline(read, flags, start); nonblock {
		return errWouldBlock
	}
	entry, ch := waiter.NewChannelEntry(ev | waiter.EventHUp | waiter.EventErr)
	s.wq.EventRegister(&entry)
	defer s.wq.EventUnregister(&entry)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var armed time.Time
	for {
		terr = try()
		if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
			return s.mapErr(terr)
		}
		// Deadlines may move while we wait (SetReadDeadline notifies
		// the queue), so they are read again on every round.
		deadline, _ := s.deadline(read, flags, start)
		var timerC <-chan time.Time
		if !deadline.IsZero() {
			wait := time.Until(deadline)
			if wait <= 0 {
				return errTimedOut
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else if !deadline.Equal(armed) {
				timer.Reset(wait)
			}
			armed = deadline
			timerC = timer.C
		}
		select {
		case <-ch:
		case <-timerC:
			timer = nil
		case <-s.closing:
			return errClosed
		}
	}
}

func (s *Socket) mapErr(terr tcpip.Error) error {
	if terr == nil {
		return nil
	}
	if s.isClosed() {
		return errClosed
	}
	if _, ok := terr.(*tcpip.ErrClosedForReceive); ok {
		return nil
	}
	return fromTCPIP(terr)
}

// CloseWithoutTimeWait closes a stream socket whose connection ended
// gracefully both ways without keeping its 4-tuple in TIME-WAIT: once
// both FINs are acknowledged the connection is forgotten at once (Linux
// keeps it 60 s). It waits up to wait for the peer to acknowledge this
// side's FIN; a connection not closed both ways by then is closed as by
// Close. A relay needs this: Linux reuses a source port as soon as its
// own side is closed, and gVisor, unlike Linux, lets such a new SYN into
// a TIME-WAIT endpoint only when a listener owns the port, so the SYN of
// a reused port waited out the TIME-WAIT. Not a Python method.
func (s *Socket) CloseWithoutTimeWait(wait time.Duration) error {
	if s.typ == SOCK_STREAM {
		deadline := time.Now().Add(wait)
		for {
			st := tcp.EndpointState(s.ep.State())
			if st == tcp.StateTimeWait {
				// Everything is acknowledged both ways: the RST that
				// Abort sends falls on a closed connection.
				s.ep.Abort()
				break
			}
			if (st != tcp.StateFinWait1 && st != tcp.StateClosing) || !time.Now().Before(deadline) || s.isClosed() {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	return s.Close()
}
