package sockets_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tapstack/tapstack/sockets"
)

// TestListenOverflowDropsNeverResets: 300 clients connect at once to a
// listener with backlog 128 that accepts in a loop, and each echoes
// 64 KiB. A handshake that does not fit the accept queue must be dropped
// (the client retransmits), as Linux does, never reset.
func TestListenOverflowDropsNeverResets(t *testing.T) {
	burst(t, 300, 0)
}

// burst runs clients echo clients at once against one listener with
// backlog 128 that starts accepting after acceptAfter.
func burst(t *testing.T, clients int, acceptAfter time.Duration) *pair {
	const size = 64 << 10
	p := newPair(t, 2*clients+16)
	ln := mustSocket(t, p.a, sockets.AF_INET, sockets.SOCK_STREAM)
	if err := ln.Bind(sockets.Addr{Host: "10.0.9.1", Port: 7070}); err != nil {
		t.Fatal(err)
	}
	if err := ln.Listen(128); err != nil {
		t.Fatal(err)
	}
	servers := serveEcho(ln, acceptAfter, 0)
	var failed atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fail := func(what string, err error) {
				if failed.Add(1) <= 5 {
					t.Errorf("client: %s: %v", what, err)
				}
			}
			s, err := sockets.New(p.b, sockets.AF_INET, sockets.SOCK_STREAM, 0)
			if err != nil {
				fail("socket", err)
				return
			}
			defer s.Close()
			if err := s.Connect(sockets.Addr{Host: "10.0.9.1", Port: 7070}); err != nil {
				fail("connect", err)
				return
			}
			s.SetTimeout(20 * time.Second)
			data := make([]byte, size)
			_, _ = rand.Read(data)
			go func() {
				_, _ = s.SendAll(data, 0)
				_ = s.Shutdown(sockets.SHUT_WR)
			}()
			var got bytes.Buffer
			buf := make([]byte, 32<<10)
			for {
				n, err := s.RecvInto(buf, 0)
				if err != nil {
					fail("recv", err)
					return
				}
				if n == 0 {
					break
				}
				got.Write(buf[:n])
			}
			if sha256.Sum256(got.Bytes()) != sha256.Sum256(data) {
				fail("echo", nil)
			}
		}()
	}
	wg.Wait()
	ln.Close()
	servers()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d clients failed", n, clients)
	}
	return p
}
