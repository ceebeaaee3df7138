package sockets_test

import (
	"io"
	"testing"

	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack"
)

// benchStream measures a TCP stream between a client and a server socket:
// b.N writes of 64 KiB, with allocations (go test -bench . -benchmem).
func benchStream(b *testing.B, client, server *stack.Stack, host string) {
	ln := mustSocket(b, server, sockets.AF_INET, sockets.SOCK_STREAM)
	if err := ln.Bind(sockets.Addr{Host: host}); err != nil {
		b.Fatal(err)
	}
	ln.Listen(1)
	la, _ := ln.GetSockName()
	done := make(chan int64)
	go func() {
		c, _, err := ln.Accept()
		if err != nil {
			done <- 0
			return
		}
		n, _ := io.Copy(io.Discard, sockets.NewConn(c))
		c.Close()
		done <- n
	}()
	c := mustSocket(b, client, sockets.AF_INET, sockets.SOCK_STREAM)
	if err := c.Connect(la); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.SendAll(buf, 0); err != nil {
			b.Fatal(err)
		}
	}
	c.Shutdown(sockets.SHUT_WR)
	if n := <-done; n != int64(b.N)*int64(len(buf)) {
		b.Fatalf("received %d of %d bytes", n, int64(b.N)*int64(len(buf)))
	}
}

// BenchmarkTCPOverPipe: two stacks joined by the in-memory cable (link,
// stack and sockets; no kernel).
func BenchmarkTCPOverPipe(b *testing.B) {
	p := newPair(b, 0)
	benchStream(b, p.b, p.a, "10.0.9.1")
}

// BenchmarkTCPOverPipeTxQueue: the same with a transmit queue on each
// link (stack.LinkConfig.TxQueues = 1, as the daemon runs).
func BenchmarkTCPOverPipeTxQueue(b *testing.B) {
	p := newPairQueued(b, 0, 1)
	benchStream(b, p.b, p.a, "10.0.9.1")
}

// BenchmarkTCPOverLoopback: one stack's loopback (stack and sockets).
func BenchmarkTCPOverLoopback(b *testing.B) {
	p := newPair(b, 0)
	benchStream(b, p.a, p.a, "127.0.0.1")
}
