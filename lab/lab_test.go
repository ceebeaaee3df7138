package lab_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/lab"
	"github.com/tapstack/tapstack/tests/nstest"
)

// The tests run in a namespace of their own (nstest.Isolate): the uplink's
// relay reaches nothing but the servers they start there.
func TestMain(m *testing.M) { os.Exit(nstest.Isolate(m)) }

// ping pings dst from nd once and fails the test if no reply comes.
func ping(t *testing.T, nd *lab.Node, dst string) {
	t.Helper()
	if out, err := tryPing(nd, dst); err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", dst, nd.Name(), err, out)
	}
}

func tryPing(nd *lab.Node, dst string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := nd.Command(ctx, "ping", "-c1", "-W2", dst).CombinedOutput()
	return string(out), err
}

// leftovers lists what of network name is still on the system: its
// namespaces, /etc/netns directories and interfaces here.
func leftovers(t *testing.T, name string) []string {
	t.Helper()
	var left []string
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, name+"-") {
			left = append(left, "netns "+l)
		}
	}
	if ents, err := os.ReadDir("/etc/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), name+"-") {
				left = append(left, "/etc/netns/"+e.Name())
			}
		}
	}
	out, err = exec.Command("ip", "-o", "link").Output()
	if err != nil {
		t.Fatalf("ip link: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, name) {
			left = append(left, "link "+l)
		}
	}
	return left
}

func TestTwoHostsOverAVeth(t *testing.T) {
	n := nstest.NewNetwork(t, lab.Options{})
	a, err := n.AddHost("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.AddHost("b")
	if err != nil {
		t.Fatal(err)
	}
	l, err := n.Connect(a, b, lab.LinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Kind() != lab.Veth || l.Iface(a) != "eth0" || l.Iface(b) != "eth0" {
		t.Errorf("link %s: kind %v, interfaces %q and %q", l.Name(), l.Kind(), l.Iface(a), l.Iface(b))
	}
	if !a.Addr4().IsValid() || !b.Addr6().IsValid() {
		t.Fatalf("addresses: a %v %v, b %v %v", a.Addr4(), a.Addr6(), b.Addr4(), b.Addr6())
	}
	ping(t, a, b.Addr4().String())
	ping(t, b, a.Addr6().String())
	ping(t, a, "b")           // by name, through /etc/netns/<ns>/hosts
	ping(t, b, "a."+n.Name()) // and by its long name
}

func TestWireLossThenRestored(t *testing.T) {
	n := nstest.NewNetwork(t, lab.Options{})
	a, _ := n.AddHost("a")
	b, _ := n.AddHost("b")
	l, err := n.Connect(a, b, lab.LinkOptions{Kind: lab.Wire, Impair: "loss=100%"})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := tryPing(a, b.Addr4().String()); err == nil {
		t.Fatalf("a ping crossed a wire that loses everything:\n%s", out)
	}
	aToB, _ := l.Stats()
	if aToB.Frames == 0 || aToB.Dropped != aToB.Frames {
		t.Errorf("a→b: %+v, want every frame dropped", aToB)
	}
	if err := l.Impair(""); err != nil {
		t.Fatal(err)
	}
	ping(t, a, b.Addr4().String())
	ping(t, b, a.Addr6().String())
	if err := l.Impair("out:loss=100%"); err != nil {
		t.Fatal(err)
	}
	if _, err := tryPing(a, b.Addr4().String()); err == nil {
		t.Fatal("a ping crossed a wire whose a→b direction loses everything")
	}
	if err := l.Impair("bogus=1"); err == nil {
		t.Error("a bad spec was taken")
	}
	if l.CapturePath() == "" {
		t.Fatal("no capture")
	}
}

func TestRouterBetweenTwoSubnets(t *testing.T) {
	n := nstest.NewNetwork(t, lab.Options{})
	c, _ := n.AddHost("client")
	r, err := n.AddRouter("router")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := n.AddHost("server")
	l1, err := n.Connect(c, r, lab.LinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l2, err := n.Connect(r, s, lab.LinkOptions{Kind: lab.Wire})
	if err != nil {
		t.Fatal(err)
	}
	if l1.Addrs(c)[0].Masked() == l2.Addrs(s)[0].Masked() {
		t.Fatalf("both links on %v", l1.Addrs(c)[0].Masked())
	}
	ping(t, c, s.Addr4().String())
	ping(t, c, s.Addr6().String())
	ping(t, s, "client")

	// A Go server in one node, a Go client in the other.
	var ln net.Listener
	if err := s.Run(func() (err error) {
		ln, err = net.Listen("tcp", ":7777")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			fmt.Fprintf(conn, "hello from %s\n", s.Name())
			conn.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitPort(ctx, "tcp", ":7777"); err != nil {
		t.Fatal(err)
	}
	var got []byte
	if err := c.Run(func() error {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(s.Addr6().String(), "7777"), 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		got, err = io.ReadAll(conn)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello from server\n" {
		t.Errorf("got %q", got)
	}
}

func TestSwitch(t *testing.T) {
	n := nstest.NewNetwork(t, lab.Options{})
	sw, err := n.AddSwitch("sw")
	if err != nil {
		t.Fatal(err)
	}
	var hosts []*lab.Node
	for i := range 3 {
		h, _ := n.AddHost(fmt.Sprintf("h%d", i))
		kind := lab.Veth
		if i == 2 {
			kind = lab.Wire
		}
		if _, err := n.Connect(h, sw, lab.LinkOptions{Kind: kind}); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	if sw.Addr4().IsValid() {
		t.Errorf("the switch has an address: %v", sw.Addr4())
	}
	for _, h := range hosts[1:] {
		ping(t, hosts[0], h.Name())
		ping(t, h, hosts[0].Addr6().String())
	}
}

func TestUplink(t *testing.T) {
	n := nstest.NewNetwork(t, lab.Options{})
	c, _ := n.AddHost("client")
	r, _ := n.AddRouter("gw")
	if _, err := n.Connect(c, r, lab.LinkOptions{}); err != nil {
		t.Fatal(err)
	}
	u, err := n.AddUplink(r, lab.UplinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u.Daemon() == nil {
		t.Fatal("no daemon")
	}
	// Servers in the test's own namespace, which the relay reaches.
	for _, outer := range []string{nstest.OuterV4, nstest.OuterV6} {
		ln, err := net.Listen("tcp", net.JoinHostPort(outer, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintln(conn, conn.RemoteAddr().(*net.TCPAddr).IP)
				conn.Close()
			}
		}()
		for _, nd := range []*lab.Node{r, c} {
			var got []byte
			err := nd.Run(func() error {
				conn, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
				if err != nil {
					return err
				}
				defer conn.Close()
				got, err = io.ReadAll(conn)
				return err
			})
			if err != nil {
				t.Fatalf("%s to %s: %v", nd.Name(), ln.Addr(), err)
			}
			if len(got) == 0 {
				t.Errorf("%s to %s: nothing read", nd.Name(), ln.Addr())
			}
		}
	}
	if !u.Masquerading() {
		t.Error("the uplink does not masquerade")
	}
	rc, err := os.ReadFile(filepath.Join("/etc/netns", c.NetNS(), "resolv.conf"))
	if err != nil || !strings.Contains(string(rc), "nameserver") {
		t.Errorf("resolv.conf of the client: %q, %v", rc, err)
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	nstest.Require(t)
	dir := t.TempDir()
	n, err := lab.New(lab.Options{CaptureDir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	a, _ := n.AddHost("a")
	r, _ := n.AddRouter("r")
	sw, _ := n.AddSwitch("sw")
	b, _ := n.AddHost("b")
	for _, pair := range [][2]*lab.Node{{a, r}, {r, sw}, {b, sw}} {
		if _, err := n.Connect(pair[0], pair[1], lab.LinkOptions{Kind: lab.Wire}); err != nil {
			t.Fatal(err)
		}
	}
	veth, err := n.Connect(a, b, lab.LinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ping(t, a, "b")
	// and across the veth, so that each capture has a frame to show
	// (by name, b is reached through the router).
	ping(t, a, veth.Addrs(b)[0].Addr().String())
	if len(leftovers(t, n.Name())) == 0 {
		t.Fatal("the network is not visible")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if left := leftovers(t, n.Name()); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
	pcaps, _ := filepath.Glob(filepath.Join(dir, "*.pcap"))
	if len(pcaps) != 4 {
		t.Errorf("captures: %v, want 4", pcaps)
	}
	for _, p := range pcaps {
		if fi, err := os.Stat(p); err != nil || fi.Size() <= 24 {
			t.Errorf("capture %s: empty (%v)", p, err)
		}
	}
	if _, err := n.AddHost("c"); err == nil {
		t.Error("AddHost after Close worked")
	}
}

func TestCloseAfterHalfBuilt(t *testing.T) {
	nstest.Require(t)
	n, err := lab.New(lab.Options{CaptureDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	a, _ := n.AddHost("a")
	b, _ := n.AddHost("b")
	boom := errors.New("boom")

	restore := lab.FailAt("link", boom)
	_, err = n.Connect(a, b, lab.LinkOptions{Kind: lab.Wire})
	restore()
	if !errors.Is(err, boom) {
		t.Fatalf("Connect: %v, want boom", err)
	}
	if len(n.Links()) != 0 {
		t.Errorf("a failed link stayed: %v", n.Links())
	}
	restore = lab.FailAt("node", boom)
	_, err = n.AddRouter("r")
	restore()
	if !errors.Is(err, boom) {
		t.Fatalf("AddRouter: %v, want boom", err)
	}
	if n.Node("r") != nil {
		t.Error("a failed node stayed")
	}
	for _, bad := range []lab.LinkOptions{{Impair: "loss=1%"}, {MTU: 10}, {Addrs: map[string][]netip.Prefix{"x": nil}}} {
		if _, err := n.Connect(a, b, bad); err == nil {
			t.Errorf("Connect with %+v worked", bad)
		}
	}
	// What failed left the rest working.
	if _, err := n.Connect(a, b, lab.LinkOptions{Kind: lab.Wire}); err != nil {
		t.Fatal(err)
	}
	ping(t, a, "b")
	restore = lab.FailAt("link", boom)
	_, err = n.Connect(a, b, lab.LinkOptions{})
	restore()
	if !errors.Is(err, boom) {
		t.Fatalf("Connect: %v, want boom", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, n.Name()); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
}

// fakeT is a test that failed: it runs its cleanups when told.
type fakeT struct {
	*testing.T
	cleanups []func()
}

func (f *fakeT) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *fakeT) Failed() bool      { return true }
func (f *fakeT) end() {
	for _, fn := range slices.Backward(f.cleanups) {
		fn()
	}
}

func TestNewNetworkKeepsTheCapturesOfAFailedTest(t *testing.T) {
	nstest.Require(t)
	ft := &fakeT{T: t}
	n := nstest.NewNetwork(ft, lab.Options{})
	a, _ := n.AddHost("a")
	b, _ := n.AddHost("b")
	l, err := n.Connect(a, b, lab.LinkOptions{Kind: lab.Wire})
	if err != nil {
		ft.end()
		t.Fatal(err)
	}
	ping(t, a, "b")
	pcap := l.CapturePath()
	ft.end()
	if left := leftovers(t, n.Name()); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
	fi, err := os.Stat(pcap)
	if err != nil || fi.Size() <= 24 {
		t.Fatalf("the capture of a failed test: %v", err)
	}
	os.RemoveAll(filepath.Dir(pcap))
}
