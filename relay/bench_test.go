package relay

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/tapstack/tapstack/sockets"
)

// benchRelay streams b.N × 64 KiB through the relay between a namespace
// stack and a host socket on loopback, towards the host (up) or from it,
// with allocations per 64 KiB (go test -bench . -benchmem).
func benchRelay(b *testing.B, up bool) {
	_, ns := rig(b, Config{})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	buf := make([]byte, 64<<10)
	total := int64(b.N) * int64(len(buf))
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		if up {
			n, _ := io.Copy(io.Discard, c)
			got <- n
			return
		}
		for i := 0; i < b.N; i++ {
			if _, err := c.Write(buf); err != nil {
				break
			}
		}
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
	}()
	addr := netip.AddrPortFrom(netip.MustParseAddr("10.0.9.1"), uint16(ln.Addr().(*net.TCPAddr).Port)).String()
	c, err := sockets.Dial(context.Background(), ns, "tcp4", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	if up {
		for i := 0; i < b.N; i++ {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.(*sockets.Conn).CloseWrite()
		if n := <-got; n != total {
			b.Fatalf("host received %d of %d bytes", n, total)
		}
		return
	}
	n, err := io.CopyBuffer(io.Discard, c, buf)
	if err != nil || n != total {
		b.Fatalf("namespace received %d of %d bytes: %v", n, total, err)
	}
}

// BenchmarkRelayToHost: namespace → relay → host socket.
func BenchmarkRelayToHost(b *testing.B) { benchRelay(b, true) }

// BenchmarkRelayFromHost: host socket → relay → namespace.
func BenchmarkRelayFromHost(b *testing.B) { benchRelay(b, false) }

// BenchmarkRelayExchange: one byte from the namespace through the relay to
// a host echo on loopback and back, per operation (request/response; the
// allocations are those of both stacks and the relay per exchange).
func BenchmarkRelayExchange(b *testing.B) {
	_, ns := rig(b, Config{})
	addr := serveLoopback(b, func(c net.Conn) { io.Copy(c, c); c.Close() })
	c, err := sockets.Dial(context.Background(), ns, "tcp4", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.(*sockets.Conn).Socket().SetSockOpt(sockets.IPPROTO_TCP, sockets.TCP_NODELAY, 1); err != nil {
		b.Fatal(err)
	}
	p := []byte{'x'}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(p); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelayUDPExchange: one datagram from the namespace through the
// relay to a host echo on loopback and back, per operation.
func BenchmarkRelayUDPExchange(b *testing.B) {
	_, ns := rig(b, Config{})
	hc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer hc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := hc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			hc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	addr := netip.AddrPortFrom(netip.MustParseAddr("10.0.9.1"), uint16(hc.LocalAddr().(*net.UDPAddr).Port)).String()
	c, err := sockets.Dial(context.Background(), ns, "udp4", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	p := []byte{'x'}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(p); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelayConnect: a connection from the namespace through the
// relay to a host listener on loopback, accepted, then closed by the
// namespace, per operation.
func BenchmarkRelayConnect(b *testing.B) {
	_, ns := rig(b, Config{})
	addr := serveLoopback(b, func(c net.Conn) { io.Copy(io.Discard, c); c.Close() })
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := sockets.Dial(context.Background(), ns, "tcp4", addr)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
