package tests

import (
	"bufio"
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack/nshost"
	"github.com/tapstack/tapstack/tests/nstest"
)

// bgPy runs a python3 script in the namespace in the background; it must
// print "ready" when it is listening. lines yields the rest of its output.
func bgPy(t *testing.T, env *nstest.Env, script string, args ...string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := env.Command(ctx, "python3", append([]string{"-u", "-c", script}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case l := <-lines:
		if l != "ready" {
			t.Fatalf("python printed %q before ready", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("python did not get ready")
	}
	return lines
}

func next(t *testing.T, lines <-chan string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("python ended without output")
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no output from python in 10s")
	}
	return ""
}

const pyRecvUDP = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if len(sys.argv) > 2:
    import struct
    mreq = struct.pack("4s4s", socket.inet_aton(sys.argv[2]), socket.inet_aton("10.0.2.100"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(10)
print("ready")
d, a = s.recvfrom(100)
print("%s %s" % (d.decode(), a[0]))
`

const pySendUDP = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
if sys.argv[1].startswith("239."):
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.0.2.100"))
s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
`

// broadcastFrames counts frames the stack sent to ff:ff:ff:ff:ff:ff
// carrying IPv4.
type broadcastFrames struct{ n atomic.Int64 }

func (b *broadcastFrames) ObserveFrame(dir link.Direction, f []byte) {
	if dir == link.Outbound && len(f) > 14 && string(f[0:6]) == "\xff\xff\xff\xff\xff\xff" && f[12] == 0x08 && f[13] == 0x00 {
		b.n.Add(1)
	}
}

func TestBroadcastBothWays(t *testing.T) {
	bf := &broadcastFrames{}
	env := nstest.New(t, nshost.Config{Observer: bf})
	for i, dst := range []string{"255.255.255.255", "<broadcast>", "10.0.2.255"} {
		port := 6000 + i
		// Stack → namespace.
		lines := bgPy(t, env, pyRecvUDP, itoa(port))
		s, err := sockets.New(env.Stack, sockets.AF_INET, sockets.SOCK_DGRAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_, err = s.SendTo([]byte("nope"), 0, sockets.Addr{Host: dst, Port: port})
		if !errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), "SO_BROADCAST") {
			t.Fatalf("SendTo %s without SO_BROADCAST: %v, want EACCES naming SO_BROADCAST", dst, err)
		}
		s.SetSockOpt(sockets.SOL_SOCKET, sockets.SO_BROADCAST, 1)
		before := bf.n.Load()
		if _, err := s.SendTo([]byte("hello"), 0, sockets.Addr{Host: dst, Port: port}); err != nil {
			t.Fatalf("SendTo %s: %v", dst, err)
		}
		if got := next(t, lines); got != "hello 10.0.2.2" {
			t.Fatalf("kernel got %q from the stack's broadcast to %s", got, dst)
		}
		if bf.n.Load() == before {
			t.Fatalf("the datagram to %s did not leave as an Ethernet broadcast", dst)
		}

		// Namespace → stack.
		r, err := sockets.New(env.Stack, sockets.AF_INET, sockets.SOCK_DGRAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if err := r.Bind(sockets.Addr{Host: "0.0.0.0", Port: port + 100}); err != nil {
			t.Fatal(err)
		}
		target := dst
		if target == "<broadcast>" {
			target = "255.255.255.255"
		}
		env.MustRun(10*time.Second, nil, "python3", "-c", pySendUDP, target, itoa(port+100), "from-ns")
		r.SetTimeout(5 * time.Second)
		b, from, err := r.RecvFrom(100, 0)
		if err != nil || string(b) != "from-ns" || from.Host != "10.0.2.100" {
			t.Fatalf("stack socket on 0.0.0.0 and a broadcast to %s: %q from %v, %v", target, b, from, err)
		}
	}
}

func TestWildcardAcceptsOnTAPAndLoopback(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	ln, err := sockets.New(env.Stack, sockets.AF_INET, sockets.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := ln.Bind(sockets.Addr{Host: "0.0.0.0", Port: 8000}); err != nil {
		t.Fatal(err)
	}
	ln.Listen(4)
	// From the namespace, to the TAP address.
	done := make(chan nstest.Result, 1)
	go func() {
		done <- env.Run(10*time.Second, []byte("via-tap"), "nc", "-N", "10.0.2.2", "8000")
	}()
	ln.SetTimeout(10 * time.Second)
	c, peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if peer.Host != "10.0.2.100" {
		t.Errorf("peer %v, want 10.0.2.100", peer)
	}
	if la, _ := c.GetSockName(); la.Host != "10.0.2.2" {
		t.Errorf("local address of the accepted socket %v, want 10.0.2.2", la)
	}
	b, _ := c.Recv(100, 0)
	c.Close()
	if r := <-done; r.Err != nil || string(b) != "via-tap" {
		t.Fatalf("via TAP: got %q, nc: %v %s", b, r.Err, r.Stderr)
	}
	// From the stack itself, to 127.0.0.1.
	cl, _ := sockets.New(env.Stack, sockets.AF_INET, sockets.SOCK_STREAM, 0)
	defer cl.Close()
	if err := cl.Connect(sockets.Addr{Host: "127.0.0.1", Port: 8000}); err != nil {
		t.Fatal(err)
	}
	c, peer, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if peer.Host != "127.0.0.1" {
		t.Errorf("loopback peer %v", peer)
	}
}

func TestMulticastBothWays(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	group := "239.1.2.3"
	// Namespace → stack.
	r, err := sockets.New(env.Stack, sockets.AF_INET, sockets.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Bind(sockets.Addr{Host: "0.0.0.0", Port: 7100}); err != nil {
		t.Fatal(err)
	}
	if err := r.JoinGroup(netip.MustParseAddr(group), env.TAP); err != nil {
		t.Fatal(err)
	}
	env.MustRun(10*time.Second, nil, "python3", "-c", pySendUDP, group, "7100", "mc-from-ns")
	r.SetTimeout(5 * time.Second)
	b, from, err := r.RecvFrom(100, 0)
	if err != nil || string(b) != "mc-from-ns" || from.Host != "10.0.2.100" {
		t.Fatalf("stack member of %s: %q from %v, %v", group, b, from, err)
	}
	// Stack → namespace.
	lines := bgPy(t, env, pyRecvUDP, "7200", group)
	s, _ := sockets.New(env.Stack, sockets.AF_INET, sockets.SOCK_DGRAM, 0)
	defer s.Close()
	ifreq := netip.MustParseAddr("10.0.2.2").As4()
	if err := s.SetSockOptBytes(sockets.IPPROTO_IP, sockets.IP_MULTICAST_IF, ifreq[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SendTo([]byte("mc-from-stack"), 0, sockets.Addr{Host: group, Port: 7200}); err != nil {
		t.Fatal(err)
	}
	if got := next(t, lines); got != "mc-from-stack 10.0.2.2" {
		t.Fatalf("kernel member of %s got %q", group, got)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
