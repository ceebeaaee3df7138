// Package sockets is the socket layer of a tapstack host, modelled on
// Python's socket module: a user who knows socket.socket finds every call
// where they expect it, with the same semantics and the same errno. It
// stands on package stack (one gVisor stack) and knows nothing of TAP
// devices or namespaces.
//
// # Creating a socket
//
// Three arguments describe a socket: its address family, its type and its
// protocol. Protocol 0 picks TCP for SOCK_STREAM and UDP for SOCK_DGRAM:
//
//	s, err := sockets.New(st, sockets.AF_INET, sockets.SOCK_STREAM, 0) // IPv4 TCP
//	s, err := sockets.New(st, sockets.AF_INET, sockets.SOCK_DGRAM, 0)  // IPv4 UDP
//
// AF_INET6 is the IPv6 equivalent. Any other family, type or a protocol that
// does not match the type fails with EAFNOSUPPORT, ESOCKTNOSUPPORT or
// EPROTONOSUPPORT.
//
// # Addresses on a socket
//
// An address is an Addr, Python's (host, port) tuple; AF_INET6 adds FlowInfo
// and ScopeID:
//
//	sockets.Addr{Host: "192.168.1.50", Port: 80}
//	sockets.Addr{Host: "0.0.0.0", Port: 8000}
//
// The host is a numeric IP of the socket's family, or a special string:
//
//   - "0.0.0.0" (or "") is every IPv4 interface of this stack; "::" every
//     interface, IPv6 and — unless IPV6_V6ONLY is set — IPv4 too.
//   - "127.0.0.1" and "::1" are this stack's loopback: traffic to them never
//     reaches a link.
//   - "255.255.255.255" (or "<broadcast>") is the local broadcast: a datagram
//     to it leaves the first IPv4 link as an Ethernet broadcast. Sending to it
//     or to a subnet broadcast (10.0.2.255) needs SO_BROADCAST, else EACCES.
//
// Host names are not addresses: "example.com" fails with EINVAL and
// errors.Is(err, ErrNeedResolve); resolve them first with GetAddrInfo (see
// "Names" below). A port outside 0–65535 is EINVAL; port 0
// asks for an ephemeral port. An IPv6 link-local host needs a scope:
// "fe80::1%tap0", "fe80::1%2" or ScopeID, else EINVAL as on Linux.
//
// IPv4-mapped addresses follow Linux: an AF_INET6 socket is dual-stack by
// default, accepts and sends IPv4 as ::ffff:a.b.c.d, and reports IPv4 peers
// that way; IPV6_V6ONLY (set before Bind) makes it IPv6 only. A plain IPv4
// host on an AF_INET6 socket is refused with a hint to write ::ffff:a.b.c.d.
//
// # Names
//
// GetAddrInfo is Python's socket.getaddrinfo:
//
//	ais, err := sockets.GetAddrInfo(st, "name.test", 80, sockets.AF_UNSPEC, sockets.SOCK_STREAM, 0, 0)
//	// ais[i].Family, .Type, .Proto, .CanonName, .Addr
//
// Numeric hosts pass straight through; "localhost" and the static table of
// SetResolver answer locally; other names go to a DNS client that runs over
// this stack: UDP to the servers given to SetResolver, each tried in turn,
// TCP when a reply is truncated, A and AAAA, a timeout per query, search
// domains only when configured. IPv6 results come first only when the stack
// has a route to them. AI_PASSIVE with an empty host gives the wildcard,
// AI_NUMERICHOST refuses names, AI_CANONNAME fills CanonName. Errors are
// *GAIError: errors.Is(err, EAI_NONAME), EAI_AGAIN, EAI_FAMILY, EAI_SERVICE.
//
// IPv6 scope IDs name a NIC: "fe80::1%tap0", "fe80::1%2" or Addr.ScopeID.
// GetSockName and GetPeerName report the scope of link-local addresses.
//
// # The Go ecosystem on top
//
// Conn (net.Conn), Listener (net.Listener) and PacketConn (net.PacketConn,
// and net.Conn when connected) wrap sockets; Dial, Listen and ListenPacket
// build them from net-style network and address strings, resolving names
// with GetAddrInfo. Deadlines and context cancellation work, errors are
// net.Errors, time-outs match os.ErrDeadlineExceeded and calls after Close
// match net.ErrClosed. So net/http serves from a stack:
//
//	ln, _ := sockets.Listen(st, "tcp", ":80")
//	http.Serve(ln, handler)
//
// and dials through one:
//
//	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
//		return sockets.Dial(ctx, st, network, addr)
//	}}
//
// # Examples
//
// Package github.com/tapstack/tapstack/sockets/examples holds every code
// fragment of the seed document as a Go function: the IPv4 TCP and UDP
// sockets, the address tuples and special hosts, a client sending
// GET / HTTP/1.0, a server with bind/listen/accept, UDP recvfrom, and the
// with pattern as defer.
//
// # The two roles
//
// A client calls Connect (or, for UDP, just SendTo); a server calls Bind,
// then Listen and Accept (TCP) or RecvFrom (UDP):
//
//	ln, _ := sockets.New(st, sockets.AF_INET, sockets.SOCK_STREAM, 0)
//	ln.Bind(sockets.Addr{Host: "0.0.0.0", Port: 8000})
//	ln.Listen(5)
//	conn, peer, err := ln.Accept()
//
// Calls block by default. SetTimeout(d) makes them fail after d with an
// error whose Timeout() is true (and errors.Is(err, syscall.ETIMEDOUT));
// SetTimeout(0) or SetBlocking(false) makes them fail at once with EAGAIN,
// and a non-blocking TCP Connect returns EINPROGRESS: Poll for POLLOUT, then
// read SO_ERROR. Close from another goroutine unblocks a blocked call, which
// returns EBADF (errors.Is(err, net.ErrClosed) holds too). Goroutines plus
// timeouts are the Go answer to the seed's asyncio page; Poll serves
// event-loop code.
//
// # Closing a socket
//
// Every socket holds one slot of its stack's bounded socket table (1024 by
// default, stack.Config.MaxSockets) from New or Accept until Close. A full
// table makes New and Accept fail with EMFILE, naming the limit and the count
// in use; a failed Accept leaves the connection queued for the next one.
// Table lists the open sockets. Go's answer to Python's with statement is
// defer:
//
//	s, err := sockets.New(st, sockets.AF_INET, sockets.SOCK_STREAM, 0)
//	if err != nil { ... }
//	defer s.Close() // closed however the function returns
//
// # Reference: Python → Go
//
//	socket.socket(f, t, p)      New(st, f, t, p)
//	s.bind(addr)                s.Bind(addr)
//	s.listen(backlog)           s.Listen(backlog)
//	s.accept()                  s.Accept() → (*Socket, Addr, error)
//	s.connect(addr)             s.Connect(addr)
//	s.connect_ex(addr)          s.ConnectEx(addr) → syscall.Errno
//	s.send(data, flags)         s.Send(data, flags) → (n, error)
//	s.sendall(data, flags)      s.SendAll(data, flags)
//	s.sendto(data, flags, addr) s.SendTo(data, flags, addr)
//	s.recv(n, flags)            s.Recv(n, flags) → ([]byte, error); empty at end of stream
//	s.recv_into(buf, 0, flags)  s.RecvInto(buf, flags) → (n, error); 0 at end of stream
//	s.recvfrom(n, flags)        s.RecvFrom(n, flags) → ([]byte, Addr, error)
//	s.recvfrom_into(buf)        s.RecvFromInto(buf, flags)
//	s.shutdown(how)             s.Shutdown(SHUT_RD | SHUT_WR | SHUT_RDWR)
//	s.close()                   s.Close()
//	s.getsockname()             s.GetSockName()
//	s.getpeername()             s.GetPeerName()
//	s.setsockopt(l, o, int)     s.SetSockOpt(l, o, v)
//	s.setsockopt(l, o, bytes)   s.SetSockOptBytes(l, o, b); also SetLinger, JoinGroup, LeaveGroup
//	s.getsockopt(l, o)          s.GetSockOpt(l, o); GetLinger
//	s.settimeout(t)             s.SetTimeout(d); Blocking stands for None
//	s.gettimeout()              s.GetTimeout()
//	s.setblocking(flag)         s.SetBlocking(flag)
//	s.fileno()                  s.Fileno(): the table slot, -1 after Close
//	select.poll()               Poll([]PollFD, timeout)
//	socket.getaddrinfo(...)     GetAddrInfo(st, host, port, family, type, proto, flags)
//	socket.create_connection    Dial(ctx, st, "tcp", "host:port")
//
// Errors are *net.OpError values naming the operation, the network and the
// address, wrapping an errno: errors.Is(err, syscall.ECONNREFUSED) works and
// messages read like "bind tcp4 10.0.2.2:80: address already in use". One
// table (Errno) maps every gVisor error to its errno.
//
// Options: SO_REUSEADDR, SO_REUSEPORT, SO_BROADCAST, SO_KEEPALIVE, SO_RCVBUF,
// SO_SNDBUF, SO_LINGER, SO_ERROR, SO_TYPE, SO_DOMAIN, SO_PROTOCOL,
// SO_ACCEPTCONN, TCP_NODELAY, TCP_MAXSEG, TCP_KEEPIDLE, TCP_KEEPINTVL,
// TCP_KEEPCNT, TCP_QUICKACK, IP_TTL, IP_TOS, IP_MULTICAST_TTL, IP_MULTICAST_LOOP,
// IP_MULTICAST_IF, IP_ADD_MEMBERSHIP, IP_DROP_MEMBERSHIP, IPV6_V6ONLY,
// IPV6_UNICAST_HOPS, IPV6_MULTICAST_HOPS, IPV6_MULTICAST_LOOP,
// IPV6_MULTICAST_IF, IPV6_TCLASS, IPV6_JOIN_GROUP, IPV6_LEAVE_GROUP. Any
// other is ENOPROTOOPT.
//
// # Not like Linux
//
//   - Fileno is a slot number in the stack's table, not an OS descriptor.
//   - Recv returns an empty slice (RecvInto 0) and no error at end of stream,
//     like Python, not io.EOF.
//   - 255.255.255.255 leaves through the first IPv4 link; Linux needs a route
//     or SO_BINDTODEVICE to pick one.
//   - Acknowledgements are delayed, as on Linux, only while a connection
//     answers what it receives, and for at most 1 ms (Linux: 40 ms and
//     more). TCP_QUICKACK set to 1 turns the delay off for good; on Linux
//     it lasts until the next delayed acknowledgement is due.
//   - SO_RCVBUF/SO_SNDBUF report the doubled value like Linux, but gVisor's
//     buffer limits differ from the kernel's sysctls.
package sockets
