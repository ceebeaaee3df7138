package sockets

import "syscall"

// Family is an address family, as the first argument of Python's
// socket.socket.
type Family int

// Address families. The values are Linux's.
const (
	AF_UNSPEC Family = syscall.AF_UNSPEC
	AF_INET   Family = syscall.AF_INET
	AF_INET6  Family = syscall.AF_INET6
)

func (f Family) String() string {
	switch f {
	case AF_INET:
		return "AF_INET"
	case AF_INET6:
		return "AF_INET6"
	case AF_UNSPEC:
		return "AF_UNSPEC"
	}
	return "AF_" + itoa(int(f))
}

// Type is a socket type, as the second argument of Python's socket.socket.
type Type int

// Socket types. The values are Linux's.
const (
	SOCK_STREAM Type = syscall.SOCK_STREAM
	SOCK_DGRAM  Type = syscall.SOCK_DGRAM
	SOCK_RAW    Type = syscall.SOCK_RAW
)

func (t Type) String() string {
	switch t {
	case SOCK_STREAM:
		return "SOCK_STREAM"
	case SOCK_DGRAM:
		return "SOCK_DGRAM"
	case SOCK_RAW:
		return "SOCK_RAW"
	}
	return "SOCK_" + itoa(int(t))
}

// Protocol numbers, the third argument of Python's socket.socket, and the
// levels of SetSockOpt.
const (
	IPPROTO_IP   = syscall.IPPROTO_IP
	IPPROTO_TCP  = syscall.IPPROTO_TCP
	IPPROTO_UDP  = syscall.IPPROTO_UDP
	IPPROTO_IPV6 = syscall.IPPROTO_IPV6
	SOL_SOCKET   = syscall.SOL_SOCKET
	SOL_TCP      = IPPROTO_TCP
	SOL_UDP      = IPPROTO_UDP
	SOL_IP       = IPPROTO_IP
	SOL_IPV6     = IPPROTO_IPV6
)

// Option names for SetSockOpt and GetSockOpt. The values are Linux's.
const (
	SO_REUSEADDR  = syscall.SO_REUSEADDR
	SO_REUSEPORT  = 15
	SO_BROADCAST  = syscall.SO_BROADCAST
	SO_KEEPALIVE  = syscall.SO_KEEPALIVE
	SO_RCVBUF     = syscall.SO_RCVBUF
	SO_SNDBUF     = syscall.SO_SNDBUF
	SO_LINGER     = syscall.SO_LINGER
	SO_ERROR      = syscall.SO_ERROR
	SO_TYPE       = syscall.SO_TYPE
	SO_DOMAIN     = 39
	SO_PROTOCOL   = 38
	SO_ACCEPTCONN = syscall.SO_ACCEPTCONN

	TCP_NODELAY   = syscall.TCP_NODELAY
	TCP_MAXSEG    = syscall.TCP_MAXSEG
	TCP_KEEPIDLE  = syscall.TCP_KEEPIDLE
	TCP_KEEPINTVL = syscall.TCP_KEEPINTVL
	TCP_KEEPCNT   = syscall.TCP_KEEPCNT
	TCP_QUICKACK  = syscall.TCP_QUICKACK

	IP_TOS             = syscall.IP_TOS
	IP_TTL             = syscall.IP_TTL
	IP_MULTICAST_IF    = syscall.IP_MULTICAST_IF
	IP_MULTICAST_TTL   = syscall.IP_MULTICAST_TTL
	IP_MULTICAST_LOOP  = syscall.IP_MULTICAST_LOOP
	IP_ADD_MEMBERSHIP  = syscall.IP_ADD_MEMBERSHIP
	IP_DROP_MEMBERSHIP = syscall.IP_DROP_MEMBERSHIP

	IPV6_V6ONLY         = syscall.IPV6_V6ONLY
	IPV6_UNICAST_HOPS   = syscall.IPV6_UNICAST_HOPS
	IPV6_MULTICAST_IF   = syscall.IPV6_MULTICAST_IF
	IPV6_MULTICAST_HOPS = syscall.IPV6_MULTICAST_HOPS
	IPV6_MULTICAST_LOOP = syscall.IPV6_MULTICAST_LOOP
	IPV6_JOIN_GROUP     = syscall.IPV6_JOIN_GROUP
	IPV6_LEAVE_GROUP    = syscall.IPV6_LEAVE_GROUP
	IPV6_TCLASS         = syscall.IPV6_TCLASS
)

// How for Shutdown.
const (
	SHUT_RD   = syscall.SHUT_RD
	SHUT_WR   = syscall.SHUT_WR
	SHUT_RDWR = syscall.SHUT_RDWR
)

// Flags for Recv, RecvFrom, Send and SendTo.
const (
	MSG_PEEK     = syscall.MSG_PEEK
	MSG_DONTWAIT = syscall.MSG_DONTWAIT
	MSG_WAITALL  = syscall.MSG_WAITALL
)

func itoa(i int) string {
	if i < 0 {
		return "-" + itoa(-i)
	}
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
