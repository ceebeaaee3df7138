package sockets_test

import (
	"net/netip"
	"testing"

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
