package lab_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tapstack/tapstack/lab"
	"github.com/tapstack/tapstack/tests/nstest"
)

// requireNetns skips a benchmark where namespaces cannot be made.
func requireNetns(b *testing.B) {
	b.Helper()
	if why := nstest.Missing(); why != "" {
		b.Skip("lab: skipped: " + why)
	}
}

// BenchmarkWireVsVeth copies over TCP, from a Go socket in one node to a
// Go socket in the other, across an unimpaired tapstack wire and across
// a kernel veth of the same network, at the default MTU (1500) and at
// 65520: MB/s is what the link carries.
//
//	go test -run - -bench WireVsVeth ./lab
func BenchmarkWireVsVeth(b *testing.B) {
	requireNetns(b)
	n, err := lab.New(lab.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	pair := func(kind lab.LinkKind, mtu int, x, y string) [2]*lab.Node {
		a, err := n.AddHost(x)
		if err != nil {
			b.Fatal(err)
		}
		c, err := n.AddHost(y)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := n.Connect(a, c, lab.LinkOptions{Kind: kind, MTU: mtu, NoIPv6: true}); err != nil {
			b.Fatal(err)
		}
		return [2]*lab.Node{a, c}
	}
	cases := []struct {
		name  string
		nodes [2]*lab.Node
	}{
		{"wire", pair(lab.Wire, 0, "wa", "wb")},
		{"veth", pair(lab.Veth, 0, "va", "vb")},
		{"wire-mtu65520", pair(lab.Wire, 65520, "ja", "jb")},
		{"veth-mtu65520", pair(lab.Veth, 65520, "ka", "kb")},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) { benchCopy(b, c.nodes[0], c.nodes[1]) })
	}
}

// benchCopy sends b.N MiB from a Go socket made in from to one made in
// to.
func benchCopy(b *testing.B, from, to *lab.Node) {
	var ln net.Listener
	if err := to.Run(func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(to.Addr4().String(), "0"))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var conn net.Conn
	if err := from.Run(func() (err error) {
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp4", ln.Addr().String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	peer, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer peer.Close()
	got := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, peer)
		got <- n
	}()
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := conn.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		b.Fatal(err)
	}
	if n := <-got; n != int64(b.N)*int64(len(buf)) {
		b.Fatalf("received %d bytes of %d", n, int64(b.N)*int64(len(buf)))
	}
	b.StopTimer()
}

// build10 builds ten nodes: hosts h1–h3 and router r1 on switch sw, r1
// joined to router r2 by a wire, and hosts h4–h7 on r2 (two wires, two
// veths).
func build10(n *lab.Network) (first, last *lab.Node, err error) {
	add := func(f func(string) (*lab.Node, error), name string) *lab.Node {
		if err != nil {
			return nil
		}
		var nd *lab.Node
		nd, err = f(name)
		return nd
	}
	connect := func(a, c *lab.Node, kind lab.LinkKind) {
		if err != nil {
			return
		}
		_, err = n.Connect(a, c, lab.LinkOptions{Kind: kind})
	}
	sw := add(n.AddSwitch, "sw")
	r1 := add(n.AddRouter, "r1")
	r2 := add(n.AddRouter, "r2")
	connect(r1, sw, lab.Veth)
	for _, h := range []string{"h1", "h2", "h3"} {
		connect(add(n.AddHost, h), sw, lab.Veth)
	}
	connect(r1, r2, lab.Wire)
	for i, h := range []string{"h4", "h5", "h6", "h7"} {
		kind := lab.Veth
		if i%2 == 0 {
			kind = lab.Wire
		}
		connect(r2, add(n.AddHost, h), kind)
	}
	return n.Node("h1"), n.Node("h7"), err
}

// BenchmarkBuild10 builds a ten-node network (a switch, two routers,
// seven hosts, nine links of which three are wires) and tears it down;
// build-ms and close-ms split the time. The first network is checked
// end to end with a ping from h1 to h7, outside the timer.
//
//	go test -run - -bench Build10 -benchtime 5x ./lab
func BenchmarkBuild10(b *testing.B) {
	requireNetns(b)
	var build, closing time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		n, err := lab.New(lab.Options{})
		if err != nil {
			b.Fatal(err)
		}
		first, last, err := build10(n)
		if err != nil {
			n.Close()
			b.Fatal(err)
		}
		built := time.Now()
		build += built.Sub(start)
		if i == 0 {
			b.StopTimer()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			out, err := first.Command(ctx, "ping", "-c", "1", "-W", "5", "h7").CombinedOutput()
			cancel()
			if err != nil {
				n.Close()
				b.Fatalf("ping h7 from h1 (%s): %v\n%s", last.Addr4(), err, out)
			}
			b.StartTimer()
			built = time.Now()
		}
		if err := n.Close(); err != nil {
			b.Fatal(err)
		}
		closing += time.Since(built)
	}
	b.ReportMetric(float64(build.Milliseconds())/float64(b.N), "build-ms/op")
	b.ReportMetric(float64(closing.Milliseconds())/float64(b.N), "close-ms/op")
}
