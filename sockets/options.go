package sockets

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// Linger is the value of SO_LINGER.
type Linger struct {
	On      bool
	Seconds int
}

func errNoOpt(level, opt int) error {
	return errnoErr(syscall.ENOPROTOOPT, fmt.Sprintf("protocol not available: option %d at level %d is not supported", opt, level))
}

func errOptType(level, opt int) error {
	return errnoErr(syscall.ENOPROTOOPT, fmt.Sprintf("protocol not available: option %d at level %d does not apply to this socket type", opt, level))
}

// SetSockOpt sets an integer option: Python's setsockopt(level, optname,
// value) with an int. Options that take a structure (SO_LINGER,
// IP_ADD_MEMBERSHIP, IPV6_JOIN_GROUP …) go through SetSockOptBytes. An
// unknown option is ENOPROTOOPT.
func (s *Socket) SetSockOpt(level, opt, value int) error {
	if s.isClosed() {
		return s.opError("setsockopt", nil, errClosed)
	}
	return s.opError("setsockopt", nil, s.setInt(level, opt, value))
}

func (s *Socket) setInt(level, opt, v int) error {
	so := s.ep.SocketOptions()
	on := v != 0
	switch level {
	case SOL_SOCKET:
		switch opt {
		case SO_REUSEADDR:
			so.SetReuseAddress(on)
		case SO_REUSEPORT:
			so.SetReusePort(on)
		case SO_BROADCAST:
			so.SetBroadcast(on)
		case SO_KEEPALIVE:
			so.SetKeepAlive(on)
		case SO_RCVBUF:
			// Linux doubles the value for bookkeeping; so do we.
			so.SetReceiveBufferSize(int64(v)*2, true)
		case SO_SNDBUF:
			so.SetSendBufferSize(int64(v)*2, true)
		case SO_LINGER:
			return errnoErr(syscall.EINVAL, "invalid argument: SO_LINGER takes a struct linger; use SetSockOptBytes or SetLinger")
		case SO_ERROR, SO_TYPE, SO_DOMAIN, SO_PROTOCOL, SO_ACCEPTCONN:
			return errnoErr(syscall.ENOPROTOOPT, fmt.Sprintf("protocol not available: option %d is read-only", opt))
		default:
			return errNoOpt(level, opt)
		}
		return nil
	case IPPROTO_TCP:
		if s.typ != SOCK_STREAM {
			return errOptType(level, opt)
		}
		switch opt {
		case TCP_NODELAY:
			so.SetDelayOption(!on)
			return nil
		case TCP_QUICKACK:
			so.SetQuickAck(on)
			return nil
		case TCP_KEEPIDLE, TCP_KEEPINTVL:
			if v < 1 || v > 32767 {
				return errnoErr(syscall.EINVAL, fmt.Sprintf("invalid argument: %d seconds (1..32767)", v))
			}
			if opt == TCP_KEEPIDLE {
				o := tcpip.KeepaliveIdleOption(time.Duration(v) * time.Second)
				return fromTCPIP(s.ep.SetSockOpt(&o))
			}
			o := tcpip.KeepaliveIntervalOption(time.Duration(v) * time.Second)
			return fromTCPIP(s.ep.SetSockOpt(&o))
		case TCP_KEEPCNT:
			if v < 1 || v > 127 {
				return errnoErr(syscall.EINVAL, fmt.Sprintf("invalid argument: %d probes (1..127)", v))
			}
			return fromTCPIP(s.ep.SetSockOptInt(tcpip.KeepaliveCountOption, v))
		case TCP_MAXSEG:
			return fromTCPIP(s.ep.SetSockOptInt(tcpip.MaxSegOption, v))
		}
		return errNoOpt(level, opt)
	case IPPROTO_IP:
		switch opt {
		case IP_TTL:
			if v == -1 {
				v = 0 // the default
			}
			if v < 0 || v > 255 {
				return errnoErr(syscall.EINVAL, fmt.Sprintf("invalid argument: TTL %d (1..255, or -1 for the default)", v))
			}
			return fromTCPIP(s.ep.SetSockOptInt(tcpip.IPv4TTLOption, v))
		case IP_TOS:
			return fromTCPIP(s.ep.SetSockOptInt(tcpip.IPv4TOSOption, v&0xff))
		case IP_MULTICAST_TTL:
			if v == -1 {
				v = 1
			}
			if v < 0 || v > 255 {
				return errnoErr(syscall.EINVAL, fmt.Sprintf("invalid argument: multicast TTL %d (0..255)", v))
			}
			return fromTCPIP(s.ep.SetSockOptInt(tcpip.MulticastTTLOption, v))
		case IP_MULTICAST_LOOP:
			so.SetMulticastLoop(on)
			return nil
		case IP_ADD_MEMBERSHIP, IP_DROP_MEMBERSHIP, IP_MULTICAST_IF:
			return errnoErr(syscall.EINVAL, "invalid argument: this option takes a structure; use SetSockOptBytes or JoinGroup")
		}
		return errNoOpt(level, opt)
	case IPPROTO_IPV6:
		if s.family != AF_INET6 {
			return errOptType(level, opt)
		}
		switch opt {
		case IPV6_V6ONLY:
			if fa, err := s.ep.GetLocalAddress(); err == nil && fa.Port != 0 {
				return errnoErr(syscall.EINVAL, "invalid argument: IPV6_V6ONLY must be set before Bind")
			}
			so.SetV6Only(on)
			return nil
		case IPV6_UNICAST_HOPS:
			if v < -1 || v > 255 {
				return errnoErr(syscall.EINVAL, fmt.Sprintf("invalid argument: hop limit %d (-1..255)", v))
			}
			return fromTCPIP(s.ep.SetSockOptInt(tcpip.IPv6HopLimitOption, v))
		case IPV6_MULTICAST_HOPS:
			if v == -1 {
				v = 1
			}
			if v < 0 || v > 255 {
				return errnoErr(syscall.EINVAL, fmt.Sprintf("invalid argument: multicast hops %d (0..255)", v))
			}
			return fromTCPIP(s.ep.SetSockOptInt(tcpip.MulticastTTLOption, v))
		case IPV6_MULTICAST_LOOP:
			so.SetMulticastLoop(on)
			return nil
		case IPV6_TCLASS:
			return fromTCPIP(s.ep.SetSockOptInt(tcpip.IPv6TrafficClassOption, v&0xff))
		case IPV6_MULTICAST_IF:
			return fromTCPIP(s.ep.SetSockOptInt(tcpip.IPv6MulticastInterfaceOption, v))
		case IPV6_JOIN_GROUP, IPV6_LEAVE_GROUP:
			return errnoErr(syscall.EINVAL, "invalid argument: this option takes a struct ipv6_mreq; use SetSockOptBytes or JoinGroup")
		}
		return errNoOpt(level, opt)
	}
	return errNoOpt(level, opt)
}

// SetSockOptBytes sets an option from its Linux C structure, as Python's
// setsockopt(level, optname, bytes) does: struct linger for SO_LINGER,
// struct ip_mreq or ip_mreqn for IP_ADD_MEMBERSHIP/IP_DROP_MEMBERSHIP,
// struct in_addr or ip_mreqn for IP_MULTICAST_IF, struct ipv6_mreq for
// IPV6_JOIN_GROUP/IPV6_LEAVE_GROUP. Integer options accept a 4-byte int.
func (s *Socket) SetSockOptBytes(level, opt int, value []byte) error {
	if s.isClosed() {
		return s.opError("setsockopt", nil, errClosed)
	}
	return s.opError("setsockopt", nil, s.setBytes(level, opt, value))
}

func (s *Socket) setBytes(level, opt int, b []byte) error {
	le := binary.NativeEndian
	short := func(n int) error {
		return errnoErr(syscall.EINVAL, fmt.Sprintf("invalid argument: option value is %d bytes, want at least %d", len(b), n))
	}
	switch {
	case level == SOL_SOCKET && opt == SO_LINGER:
		if len(b) < 8 {
			return short(8)
		}
		s.ep.SocketOptions().SetLinger(tcpip.LingerOption{
			Enabled: le.Uint32(b[0:4]) != 0,
			Timeout: time.Duration(int32(le.Uint32(b[4:8]))) * time.Second,
		})
		return nil
	case level == IPPROTO_IP && (opt == IP_ADD_MEMBERSHIP || opt == IP_DROP_MEMBERSHIP):
		if len(b) < 8 {
			return short(8)
		}
		m := tcpip.MembershipOption{MulticastAddr: tcpip.AddrFrom4([4]byte(b[0:4]))}
		if len(b) >= 12 { // ip_mreqn: multiaddr, address, ifindex
			m.NIC = tcpip.NICID(le.Uint32(b[8:12]))
		}
		if a := [4]byte(b[4:8]); a != [4]byte{} {
			m.InterfaceAddr = tcpip.AddrFrom4(a)
		}
		if opt == IP_ADD_MEMBERSHIP {
			o := tcpip.AddMembershipOption(m)
			return fromTCPIP(s.ep.SetSockOpt(&o))
		}
		o := tcpip.RemoveMembershipOption(m)
		return fromTCPIP(s.ep.SetSockOpt(&o))
	case level == IPPROTO_IP && opt == IP_MULTICAST_IF:
		if len(b) < 4 {
			return short(4)
		}
		o := tcpip.MulticastInterfaceOption{}
		switch {
		case len(b) >= 12: // ip_mreqn
			if a := [4]byte(b[4:8]); a != [4]byte{} {
				o.InterfaceAddr = tcpip.AddrFrom4(a)
			}
			o.NIC = tcpip.NICID(le.Uint32(b[8:12]))
		default:
			if a := [4]byte(b[0:4]); a != [4]byte{} {
				o.InterfaceAddr = tcpip.AddrFrom4(a)
			}
		}
		return fromTCPIP(s.ep.SetSockOpt(&o))
	case level == IPPROTO_IPV6 && (opt == IPV6_JOIN_GROUP || opt == IPV6_LEAVE_GROUP):
		if s.family != AF_INET6 {
			return errOptType(level, opt)
		}
		if len(b) < 20 {
			return short(20)
		}
		m := tcpip.MembershipOption{
			MulticastAddr: tcpip.AddrFrom16([16]byte(b[0:16])),
			NIC:           tcpip.NICID(le.Uint32(b[16:20])),
		}
		if opt == IPV6_JOIN_GROUP {
			o := tcpip.AddMembershipOption(m)
			return fromTCPIP(s.ep.SetSockOpt(&o))
		}
		o := tcpip.RemoveMembershipOption(m)
		return fromTCPIP(s.ep.SetSockOpt(&o))
	}
	if len(b) < 4 {
		return short(4)
	}
	return s.setInt(level, opt, int(int32(le.Uint32(b[:4]))))
}

// SetLinger sets SO_LINGER.
func (s *Socket) SetLinger(l Linger) error {
	b := make([]byte, 8)
	if l.On {
		binary.NativeEndian.PutUint32(b[0:4], 1)
	}
	binary.NativeEndian.PutUint32(b[4:8], uint32(int32(l.Seconds)))
	return s.SetSockOptBytes(SOL_SOCKET, SO_LINGER, b)
}

// JoinGroup joins a multicast group on the NIC named ifname ("" lets the
// stack choose by route): IP_ADD_MEMBERSHIP or IPV6_JOIN_GROUP.
func (s *Socket) JoinGroup(group netip.Addr, ifname string) error {
	return s.membership(group, ifname, true)
}

// LeaveGroup leaves a multicast group: IP_DROP_MEMBERSHIP or
// IPV6_LEAVE_GROUP.
func (s *Socket) LeaveGroup(group netip.Addr, ifname string) error {
	return s.membership(group, ifname, false)
}

func (s *Socket) membership(group netip.Addr, ifname string, join bool) error {
	if !group.IsMulticast() {
		return s.opError("setsockopt", nil, errnoErr(syscall.EINVAL, fmt.Sprintf("invalid argument: %s is not a multicast address", group)))
	}
	var nic uint32
	if ifname != "" {
		n, ok := s.st.NICByName(ifname)
		if !ok {
			return s.opError("setsockopt", nil, errnoErr(syscall.ENODEV, fmt.Sprintf("no such device: %q", ifname)))
		}
		nic = uint32(n.ID)
	}
	if group.Is4() {
		b := make([]byte, 12)
		g := group.As4()
		copy(b[0:4], g[:])
		binary.NativeEndian.PutUint32(b[8:12], nic)
		opt := IP_ADD_MEMBERSHIP
		if !join {
			opt = IP_DROP_MEMBERSHIP
		}
		return s.SetSockOptBytes(IPPROTO_IP, opt, b)
	}
	b := make([]byte, 20)
	g := group.As16()
	copy(b[0:16], g[:])
	binary.NativeEndian.PutUint32(b[16:20], nic)
	opt := IPV6_JOIN_GROUP
	if !join {
		opt = IPV6_LEAVE_GROUP
	}
	return s.SetSockOptBytes(IPPROTO_IPV6, opt, b)
}

// GetSockOpt reads an integer option: Python's getsockopt(level, optname).
// SO_ERROR returns and clears the pending errno (how a non-blocking
// Connect reports its result). SO_LINGER returns l_onoff; GetLinger has
// both fields.
func (s *Socket) GetSockOpt(level, opt int) (int, error) {
	if s.isClosed() {
		return 0, s.opError("getsockopt", nil, errClosed)
	}
	v, err := s.getInt(level, opt)
	return v, s.opError("getsockopt", nil, err)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (s *Socket) getInt(level, opt int) (int, error) {
	so := s.ep.SocketOptions()
	switch level {
	case SOL_SOCKET:
		switch opt {
		case SO_REUSEADDR:
			return b2i(so.GetReuseAddress()), nil
		case SO_REUSEPORT:
			return b2i(so.GetReusePort()), nil
		case SO_BROADCAST:
			return b2i(so.GetBroadcast()), nil
		case SO_KEEPALIVE:
			return b2i(so.GetKeepAlive()), nil
		case SO_RCVBUF:
			return int(so.GetReceiveBufferSize()), nil
		case SO_SNDBUF:
			return int(so.GetSendBufferSize()), nil
		case SO_LINGER:
			return b2i(so.GetLinger().Enabled), nil
		case SO_ERROR:
			return int(Errno(s.ep.LastError())), nil
		case SO_TYPE:
			return int(s.typ), nil
		case SO_DOMAIN:
			return int(s.family), nil
		case SO_PROTOCOL:
			return s.proto, nil
		case SO_ACCEPTCONN:
			s.mu.Lock()
			defer s.mu.Unlock()
			return b2i(s.listening), nil
		}
	case IPPROTO_TCP:
		if s.typ != SOCK_STREAM {
			return 0, errOptType(level, opt)
		}
		switch opt {
		case TCP_NODELAY:
			return b2i(!so.GetDelayOption()), nil
		case TCP_QUICKACK:
			return b2i(so.GetQuickAck()), nil
		case TCP_KEEPIDLE:
			var o tcpip.KeepaliveIdleOption
			if err := s.ep.GetSockOpt(&o); err != nil {
				return 0, fromTCPIP(err)
			}
			return int(time.Duration(o) / time.Second), nil
		case TCP_KEEPINTVL:
			var o tcpip.KeepaliveIntervalOption
			if err := s.ep.GetSockOpt(&o); err != nil {
				return 0, fromTCPIP(err)
			}
			return int(time.Duration(o) / time.Second), nil
		case TCP_KEEPCNT:
			v, err := s.ep.GetSockOptInt(tcpip.KeepaliveCountOption)
			return v, fromTCPIP(err)
		case TCP_MAXSEG:
			v, err := s.ep.GetSockOptInt(tcpip.MaxSegOption)
			return v, fromTCPIP(err)
		}
	case IPPROTO_IP:
		switch opt {
		case IP_TTL:
			v, err := s.ep.GetSockOptInt(tcpip.IPv4TTLOption)
			if err == nil && v == 0 {
				v = 64 // gVisor's and Linux's default
			}
			return v, fromTCPIP(err)
		case IP_TOS:
			v, err := s.ep.GetSockOptInt(tcpip.IPv4TOSOption)
			return v, fromTCPIP(err)
		case IP_MULTICAST_TTL:
			v, err := s.ep.GetSockOptInt(tcpip.MulticastTTLOption)
			return v, fromTCPIP(err)
		case IP_MULTICAST_LOOP:
			return b2i(so.GetMulticastLoop()), nil
		}
	case IPPROTO_IPV6:
		if s.family != AF_INET6 {
			return 0, errOptType(level, opt)
		}
		switch opt {
		case IPV6_V6ONLY:
			return b2i(so.GetV6Only()), nil
		case IPV6_UNICAST_HOPS:
			v, err := s.ep.GetSockOptInt(tcpip.IPv6HopLimitOption)
			if err == nil && v == -1 {
				v = 64
			}
			return v, fromTCPIP(err)
		case IPV6_MULTICAST_HOPS:
			v, err := s.ep.GetSockOptInt(tcpip.MulticastTTLOption)
			return v, fromTCPIP(err)
		case IPV6_MULTICAST_LOOP:
			return b2i(so.GetMulticastLoop()), nil
		case IPV6_TCLASS:
			v, err := s.ep.GetSockOptInt(tcpip.IPv6TrafficClassOption)
			return v, fromTCPIP(err)
		case IPV6_MULTICAST_IF:
			v, err := s.ep.GetSockOptInt(tcpip.IPv6MulticastInterfaceOption)
			return v, fromTCPIP(err)
		}
	}
	return 0, errNoOpt(level, opt)
}

// GetLinger reads SO_LINGER.
func (s *Socket) GetLinger() (Linger, error) {
	if s.isClosed() {
		return Linger{}, s.opError("getsockopt", nil, errClosed)
	}
	l := s.ep.SocketOptions().GetLinger()
	return Linger{On: l.Enabled, Seconds: int(l.Timeout / time.Second)}, nil
}
