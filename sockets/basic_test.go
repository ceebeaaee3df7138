package sockets_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/tapstack/tapstack/sockets"
)

func TestTCPEchoBothFamilies(t *testing.T) {
	p := newPair(t, 0)
	for _, tc := range []struct {
		f    sockets.Family
		host string
	}{{sockets.AF_INET, "10.0.9.1"}, {sockets.AF_INET6, "fd09::1"}} {
		t.Run(tc.f.String(), func(t *testing.T) {
			ln := mustSocket(t, p.a, tc.f, sockets.SOCK_STREAM)
			if err := ln.Bind(sockets.Addr{Host: "", Port: 0}); err != nil {
				t.Fatal(err)
			}
			if err := ln.Listen(5); err != nil {
				t.Fatal(err)
			}
			la, err := ln.GetSockName()
			if err != nil {
				t.Fatal(err)
			}
			data := make([]byte, 64<<20) // 64 MiB each way, checked by SHA-256
			rand.Read(data)
			errc := make(chan error, 1)
			go func() {
				c, _, err := ln.Accept()
				if err != nil {
					errc <- err
					return
				}
				defer c.Close()
				for {
					b, err := c.Recv(65536, 0)
					if err != nil {
						errc <- err
						return
					}
					if len(b) == 0 {
						errc <- nil
						return
					}
					if _, err := c.SendAll(b, 0); err != nil {
						errc <- err
						return
					}
				}
			}()
			c := mustSocket(t, p.b, tc.f, sockets.SOCK_STREAM)
			if err := c.Connect(sockets.Addr{Host: tc.host, Port: la.Port}); err != nil {
				t.Fatal(err)
			}
			peer, err := c.GetPeerName()
			if err != nil || peer.Host != tc.host || peer.Port != la.Port {
				t.Fatalf("GetPeerName = %v, %v", peer, err)
			}
			go func() {
				c.SendAll(data, 0)
				c.Shutdown(sockets.SHUT_WR)
			}()
			h := sha256.New()
			got := 0
			for {
				b, err := c.Recv(65536, 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(b) == 0 {
					break
				}
				h.Write(b)
				got += len(b)
			}
			want := sha256.Sum256(data)
			if got != len(data) || !bytes.Equal(h.Sum(nil), want[:]) {
				t.Fatalf("echoed %d bytes, hash mismatch=%v", got, !bytes.Equal(h.Sum(nil), want[:]))
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestConnectRefusedAndTimeout(t *testing.T) {
	p := newPair(t, 0)
	c := mustSocket(t, p.b, sockets.AF_INET, sockets.SOCK_STREAM)
	err := c.Connect(sockets.Addr{Host: "10.0.9.1", Port: 1})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to closed port: %v, want ECONNREFUSED", err)
	}
	u := mustSocket(t, p.b, sockets.AF_INET, sockets.SOCK_DGRAM)
	if err := u.Bind(sockets.Addr{Host: "0.0.0.0"}); err != nil {
		t.Fatal(err)
	}
	u.SetTimeout(50 * time.Millisecond)
	_, _, err = u.RecvFrom(10, 0)
	var ne interface{ Timeout() bool }
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("RecvFrom with timeout: %v, want a timeout", err)
	}
	u.SetBlocking(false)
	if _, _, err := u.RecvFrom(10, 0); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("non-blocking RecvFrom: %v, want EAGAIN", err)
	}
}

func TestUDPEcho(t *testing.T) {
	p := newPair(t, 0)
	for _, tc := range []struct {
		f    sockets.Family
		host string
	}{{sockets.AF_INET, "10.0.9.1"}, {sockets.AF_INET6, "fd09::1"}} {
		srv := mustSocket(t, p.a, tc.f, sockets.SOCK_DGRAM)
		// Distinct ports: [::]:P and 0.0.0.0:P conflict, as on Linux.
		port := 7000 + int(tc.f)
		if err := srv.Bind(sockets.Addr{Port: port}); err != nil {
			t.Fatal(err)
		}
		cl := mustSocket(t, p.b, tc.f, sockets.SOCK_DGRAM)
		if _, err := cl.SendTo([]byte("hello"), 0, sockets.Addr{Host: tc.host, Port: port}); err != nil {
			t.Fatal(err)
		}
		b, from, err := srv.RecvFrom(100, 0)
		if err != nil || string(b) != "hello" {
			t.Fatalf("RecvFrom = %q, %v", b, err)
		}
		if _, err := srv.SendTo(b, 0, from); err != nil {
			t.Fatal(err)
		}
		b, _, err = cl.RecvFrom(100, 0)
		if err != nil || string(b) != "hello" {
			t.Fatalf("reply = %q, %v", b, err)
		}
	}
}

func TestCloseUnblocksRecv(t *testing.T) {
	p := newPair(t, 0)
	u := mustSocket(t, p.a, sockets.AF_INET, sockets.SOCK_DGRAM)
	u.Bind(sockets.Addr{})
	errc := make(chan error)
	go func() {
		_, _, err := u.RecvFrom(10, 0)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	u.Close()
	if err := <-errc; !errors.Is(err, syscall.EBADF) {
		t.Fatalf("blocked RecvFrom after Close: %v, want EBADF", err)
	}
}
