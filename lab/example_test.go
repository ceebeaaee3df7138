package lab_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/tapstack/tapstack/lab"
)

// A client and a server with a router between them, one of the two links
// a lossy tapstack wire; the client pings the server by name. (The
// examples need root and are not run by go test.)
func Example() {
	n, err := lab.New(lab.Options{CaptureDir: "/tmp/lab-captures"})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	client, _ := n.AddHost("client")
	router, _ := n.AddRouter("router")
	server, _ := n.AddHost("server")
	if _, err := n.Connect(client, router, lab.LinkOptions{}); err != nil {
		log.Fatal(err)
	}
	wire, err := n.Connect(router, server, lab.LinkOptions{Kind: lab.Wire, Impair: "loss=5%,delay=10ms"})
	if err != nil {
		log.Fatal(err)
	}
	out, err := client.Command(context.Background(), "ping", "-c3", "server").CombinedOutput()
	fmt.Printf("%s%v\n", out, err)
	aToB, bToA := wire.Stats()
	fmt.Printf("router→server: %d frames, %d lost; server→router: %d frames, %d lost (seed %d, capture %s)\n",
		aToB.Frames, aToB.Dropped, bToA.Frames, bToA.Dropped, wire.Seed(), wire.CapturePath())
}

// Changing a wire's impairment while the network runs: a partition, then
// a healed link.
func ExampleLink_Impair() {
	n, err := lab.New(lab.Options{Seed: 42}) // the same seed replays the same losses
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	a, _ := n.AddHost("a")
	b, _ := n.AddHost("b")
	l, err := n.Connect(a, b, lab.LinkOptions{Kind: lab.Wire})
	if err != nil {
		log.Fatal(err)
	}
	_ = l.Impair("loss=100%") // partitioned
	err = a.Command(context.Background(), "ping", "-c1", "-W1", "b").Run()
	fmt.Println("partitioned:", err != nil)
	_ = l.Impair("out:delay=50ms") // healed, a→b slow
	// (The kernel retries a neighbour it could not resolve once a second.)
	err = a.Command(context.Background(), "ping", "-c1", "-W3", "b").Run()
	fmt.Println("healed:", err == nil)
}

// Hosts on a switch share its subnets.
func ExampleNetwork_AddSwitch() {
	n, err := lab.New(lab.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	sw, _ := n.AddSwitch("sw")
	for _, name := range []string{"h1", "h2", "h3"} {
		h, _ := n.AddHost(name)
		if _, err := n.Connect(h, sw, lab.LinkOptions{}); err != nil {
			log.Fatal(err)
		}
		fmt.Println(name, h.Addr4(), h.Addr6())
	}
}

// Go code in a node: a server in one, a client in another.
func ExampleNode_Run() {
	n, err := lab.New(lab.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	a, _ := n.AddHost("a")
	b, _ := n.AddHost("b")
	if _, err := n.Connect(a, b, lab.LinkOptions{}); err != nil {
		log.Fatal(err)
	}
	var ln net.Listener
	_ = b.Run(func() (err error) {
		ln, err = net.Listen("tcp", ":8080") // a socket of b's namespace
		return err
	})
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			fmt.Fprintln(c, "hello")
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.WaitPort(ctx, "tcp", ":8080")
	_ = a.Run(func() error {
		c, err := net.Dial("tcp", net.JoinHostPort(b.Addr4().String(), "8080"))
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 16)
		k, _ := c.Read(buf)
		fmt.Printf("%s", buf[:k])
		return nil
	})
}

// A router with an uplink is the network's NAT gateway: every node
// reaches the host's network through a tapstack daemon, names resolved
// by its DNS forwarder.
func ExampleNetwork_AddUplink() {
	n, err := lab.New(lab.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	host, _ := n.AddHost("host")
	gw, _ := n.AddRouter("gw")
	if _, err := n.Connect(host, gw, lab.LinkOptions{}); err != nil {
		log.Fatal(err)
	}
	u, err := n.AddUplink(gw, lab.UplinkOptions{Impair: "delay=20ms"})
	if err != nil {
		log.Fatal(err)
	}
	out, err := host.Command(context.Background(), "curl", "-sI", "https://example.com").CombinedOutput()
	fmt.Printf("%s%v\n", out, err)
	fmt.Println("daemon:", u.Daemon().Name())
}
