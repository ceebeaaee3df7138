// Package examples holds the code fragments of the seed document "Socket
// objects" as Go functions on a tapstack host: creating sockets, the
// address tuples and the special hosts, a client that sends GET / HTTP/1.0,
// a server with bind/listen/accept, UDP recvfrom, and closing with defer
// (Go's with statement). Each is exercised against kernel peers in
// tapstack's integration tests, and shown in this package's examples.
package examples

import (
	"fmt"

	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack"
)

// OpenTCPAndUDP is the seed's first fragment:
//
//	s = socket.socket(socket.AF_INET, socket.SOCK_STREAM) # IPv4 TCP
//	s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # IPv4 UDP
//
// The caller closes both.
func OpenTCPAndUDP(st *stack.Stack) (tcp, udp *sockets.Socket, err error) {
	tcp, err = sockets.New(st, sockets.AF_INET, sockets.SOCK_STREAM, 0) // IPv4 TCP
	if err != nil {
		return nil, nil, err
	}
	udp, err = sockets.New(st, sockets.AF_INET, sockets.SOCK_DGRAM, 0) // IPv4 UDP
	if err != nil {
		tcp.Close()
		return nil, nil, err
	}
	return tcp, udp, nil
}

// SeedAddrs are the seed's address tuples and its three special hosts.
type SeedAddrs struct {
	Server    sockets.Addr // ("192.168.1.50", 80)
	Any       sockets.Addr // every IPv4 interface
	Localhost sockets.Addr // never leaves the host
	Broadcast sockets.Addr // every host on the segment
}

// Addresses returns the seed's addresses.
func Addresses() SeedAddrs {
	return SeedAddrs{
		Server:    sockets.Addr{Host: "192.168.1.50", Port: 80},
		Any:       sockets.Addr{Host: "0.0.0.0", Port: 8000},
		Localhost: sockets.Addr{Host: "127.0.0.1", Port: 8000},
		Broadcast: sockets.Addr{Host: "255.255.255.255", Port: 9999},
	}
}

// HTTPGet is the seed's client, in the with pattern:
//
//	with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
//	    s.connect(addr)
//	    s.send(b"GET / HTTP/1.0\r\n\r\n")
//
// It returns the whole reply. The socket is closed however it returns.
func HTTPGet(st *stack.Stack, addr sockets.Addr) (string, error) {
	s, err := sockets.New(st, sockets.AF_INET, sockets.SOCK_STREAM, 0)
	if err != nil {
		return "", err
	}
	defer s.Close() // the with statement: closed even on error
	if err := s.Connect(addr); err != nil {
		return "", err
	}
	if _, err := s.SendAll([]byte("GET / HTTP/1.0\r\n\r\n"), 0); err != nil {
		return "", err
	}
	var reply []byte
	for {
		b, err := s.Recv(4096, 0)
		if err != nil {
			return string(reply), err
		}
		if len(b) == 0 { // the server closed: the reply is complete
			return string(reply), nil
		}
		reply = append(reply, b...)
	}
}

// ServeOnce is the seed's server: bind to ("0.0.0.0", port) — every IPv4
// interface — listen, accept one connection, read the request, answer and
// close. ready, if not nil, is called once the socket listens.
func ServeOnce(st *stack.Stack, port int, answer string, ready func()) (request string, peer sockets.Addr, err error) {
	ln, err := sockets.New(st, sockets.AF_INET, sockets.SOCK_STREAM, 0)
	if err != nil {
		return "", peer, err
	}
	defer ln.Close()
	if err := ln.Bind(sockets.Addr{Host: "0.0.0.0", Port: port}); err != nil {
		return "", peer, err
	}
	if err := ln.Listen(1); err != nil {
		return "", peer, err
	}
	if ready != nil {
		ready()
	}
	conn, peer, err := ln.Accept()
	if err != nil {
		return "", peer, err
	}
	defer conn.Close()
	b, err := conn.Recv(4096, 0)
	if err != nil {
		return "", peer, err
	}
	_, err = conn.SendAll([]byte(answer), 0)
	return string(b), peer, err
}

// ReceiveDatagram is the seed's UDP server: bind and recvfrom.
func ReceiveDatagram(st *stack.Stack, port int, ready func()) ([]byte, sockets.Addr, error) {
	s, err := sockets.New(st, sockets.AF_INET, sockets.SOCK_DGRAM, 0)
	if err != nil {
		return nil, sockets.Addr{}, err
	}
	defer s.Close()
	if err := s.Bind(sockets.Addr{Host: "0.0.0.0", Port: port}); err != nil {
		return nil, sockets.Addr{}, err
	}
	if ready != nil {
		ready()
	}
	return s.RecvFrom(65535, 0)
}

// SendDatagram is the seed's UDP client: just sendto.
func SendDatagram(st *stack.Stack, to sockets.Addr, data []byte) error {
	s, err := sockets.New(st, sockets.AF_INET, sockets.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer s.Close()
	n, err := s.SendTo(data, 0, to)
	if err == nil && n != len(data) {
		err = fmt.Errorf("sent %d of %d bytes", n, len(data))
	}
	return err
}

// Broadcast sends a datagram to every host on the local segment: the
// seed's "255.255.255.255", which needs SO_BROADCAST.
func Broadcast(st *stack.Stack, port int, data []byte) error {
	s, err := sockets.New(st, sockets.AF_INET, sockets.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.SetSockOpt(sockets.SOL_SOCKET, sockets.SO_BROADCAST, 1); err != nil {
		return err
	}
	_, err = s.SendTo(data, 0, sockets.Addr{Host: "255.255.255.255", Port: port})
	return err
}
