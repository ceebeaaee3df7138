package sockets_test

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack"
)

// pair is two stacks joined by an in-memory cable: a is 10.0.9.1 and
// fd09::1, b is 10.0.9.2 and fd09::2. Both close when the test ends.
type pair struct {
	a, b   *stack.Stack
	la, lb *link.Endpoint
}

func newPair(t testing.TB, maxSockets int) *pair {
	t.Helper()
	return newPairQueued(t, maxSockets, 0)
}

// newPairQueued is newPair with txQueues transmit queues on both links
// (stack.LinkConfig.TxQueues).
func newPairQueued(t testing.TB, maxSockets, txQueues int) *pair {
	t.Helper()
	da, db := link.Pipe()
	return newPairOn(t, maxSockets, txQueues, da, db)
}

// newPairOn is newPairQueued whose stacks a and b sit on the devices da
// and db (the two ends of a link.Pipe, one of them wrapped, say).
func newPairOn(t testing.TB, maxSockets, txQueues int, da, db link.Device) *pair {
	t.Helper()
	la, err := link.New(link.Options{Devices: []link.Device{da}})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := link.New(link.Options{Devices: []link.Device{db}})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(ep *link.Endpoint, v4, v6 string) *stack.Stack {
		st, err := stack.New(stack.Config{MaxSockets: maxSockets, Links: []stack.LinkConfig{{
			Name: "eth0", Endpoint: ep, TxQueues: txQueues,
			Addrs: []netip.Prefix{netip.MustParsePrefix(v4), netip.MustParsePrefix(v6)},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		return st
	}
	return &pair{a: mk(la, "10.0.9.1/24", "fd09::1/64"), b: mk(lb, "10.0.9.2/24", "fd09::2/64"), la: la, lb: lb}
}

func mustSocket(t testing.TB, st *stack.Stack, f sockets.Family, typ sockets.Type) *sockets.Socket {
	t.Helper()
	s, err := sockets.New(st, f, typ, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// serveEcho accepts connections on ln, after pause, and echoes each
// until its end, then closes it; a timeout above 0 is each connection's
// (sockets.Socket.SetTimeout). The function it returns waits for the
// connections and the accepting goroutine, once ln is closed.
func serveEcho(ln *sockets.Socket, pause, timeout time.Duration) (wait func()) {
	var servers sync.WaitGroup
	servers.Add(1)
	go func() {
		defer servers.Done()
		time.Sleep(pause)
		for {
			c, _, err := ln.Accept()
			if err != nil {
				return
			}
			servers.Add(1)
			go func() {
				defer servers.Done()
				defer c.Close()
				if timeout > 0 {
					c.SetTimeout(timeout)
				}
				buf := make([]byte, 32<<10)
				for {
					n, err := c.RecvInto(buf, 0)
					if n == 0 || err != nil {
						return
					}
					if _, err := c.SendAll(buf[:n], 0); err != nil {
						return
					}
				}
			}()
		}
	}()
	return servers.Wait
}
