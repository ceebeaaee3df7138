package tests

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack/nshost"
	"github.com/tapstack/tapstack/tests/nstest"
)

func TestPingFromNamespace(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	for _, args := range [][]string{{"-c", "3", "-W", "2", "10.0.2.2"}, {"-6", "-c", "3", "-W", "2", "fd00::2"}} {
		out := env.MustRun(20*time.Second, nil, "ping", args...)
		if !strings.Contains(out, "3 received") {
			t.Fatalf("ping %v: %s", args, out)
		}
	}
	// gVisor counts a reply after it wrote it: ping may have it first.
	st := env.Stack.Stats().Protocols
	for deadline := time.Now().Add(2 * time.Second); (st.ICMPv4EchoRepliesSent < 3 || st.ICMPv6EchoRepliesSent < 3) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		st = env.Stack.Stats().Protocols
	}
	if st.ICMPv4EchoRepliesSent < 3 || st.ICMPv6EchoRepliesSent < 3 {
		t.Fatalf("stack counted %d ICMPv4 and %d ICMPv6 echo replies, want at least 3 each", st.ICMPv4EchoRepliesSent, st.ICMPv6EchoRepliesSent)
	}
}

// frameCounter counts frames on the TAP that carry a marker or a loopback
// address.
type frameCounter struct {
	marker       []byte
	marked, loop atomic.Int64
	total        atomic.Int64
}

func (c *frameCounter) ObserveFrame(_ link.Direction, f []byte) {
	c.total.Add(1)
	if bytes.Contains(f, c.marker) {
		c.marked.Add(1)
	}
	if len(f) < 14 {
		return
	}
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0800:
		if len(f) >= 34 && (f[14+12] == 127 || f[14+16] == 127) {
			c.loop.Add(1)
		}
	case 0x86dd:
		if len(f) >= 54 {
			lo := netip.IPv6Loopback().As16()
			if bytes.Equal(f[22:38], lo[:]) || bytes.Equal(f[38:54], lo[:]) {
				c.loop.Add(1)
			}
		}
	}
}

func TestLoopbackNeverTouchesTAP(t *testing.T) {
	fc := &frameCounter{marker: []byte("tapstack-loopback-marker-7f3a")}
	env := nstest.New(t, nshost.Config{Observer: fc})
	st := env.Stack
	payload := bytes.Repeat(fc.marker, 100)

	for _, tc := range []struct {
		f    sockets.Family
		host string
	}{{sockets.AF_INET, "127.0.0.1"}, {sockets.AF_INET6, "::1"}} {
		// TCP over loopback.
		ln, err := sockets.New(st, tc.f, sockets.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if err := ln.Bind(sockets.Addr{Host: tc.host}); err != nil {
			t.Fatal(err)
		}
		if err := ln.Listen(1); err != nil {
			t.Fatal(err)
		}
		la, _ := ln.GetSockName()
		c, err := sockets.New(st, tc.f, sockets.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Connect(la); err != nil {
			t.Fatal(err)
		}
		a, _, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if _, err := c.SendAll(payload, 0); err != nil {
			t.Fatal(err)
		}
		c.Shutdown(sockets.SHUT_WR)
		var got []byte
		for {
			b, err := a.Recv(65536, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) == 0 {
				break
			}
			got = append(got, b...)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("%s: TCP over loopback delivered %d of %d bytes", tc.host, len(got), len(payload))
		}
		// UDP over loopback.
		u1, _ := sockets.New(st, tc.f, sockets.SOCK_DGRAM, 0)
		defer u1.Close()
		u2, _ := sockets.New(st, tc.f, sockets.SOCK_DGRAM, 0)
		defer u2.Close()
		if err := u1.Bind(sockets.Addr{Host: tc.host}); err != nil {
			t.Fatal(err)
		}
		ua, _ := u1.GetSockName()
		if _, err := u2.SendTo(fc.marker, 0, ua); err != nil {
			t.Fatal(err)
		}
		if b, _, err := u1.RecvFrom(100, 0); err != nil || !bytes.Equal(b, fc.marker) {
			t.Fatalf("%s: UDP over loopback: %q, %v", tc.host, b, err)
		}
	}
	if n, l := fc.marked.Load(), fc.loop.Load(); n != 0 || l != 0 {
		t.Fatalf("loopback traffic reached the TAP: %d frames with the payload, %d with a loopback address", n, l)
	}

	// The counter can see: the same marker sent to the namespace does
	// cross the TAP.
	u, _ := sockets.New(st, sockets.AF_INET, sockets.SOCK_DGRAM, 0)
	defer u.Close()
	if _, err := u.SendTo(fc.marker, 0, sockets.Addr{Host: "10.0.2.100", Port: 9}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for fc.marked.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if fc.marked.Load() == 0 {
		t.Fatal("a datagram to the namespace was not seen on the TAP: the frame counter is blind")
	}
}
