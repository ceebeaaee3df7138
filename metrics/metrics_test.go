package metrics_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/metrics"
	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack"
)

// value is one sample of a gathered family, matching labels.
func value(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.Metric {
			got := map[string]string{}
			for _, l := range m.Label {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

// TestCountersMoveWithTraffic: a TCP exchange of known size between two
// stacks on an in-memory cable moves the collector's counters by at
// least that much, and the socket table gauge follows the sockets.
func TestCountersMoveWithTraffic(t *testing.T) {
	da, db := link.Pipe()
	la, _ := link.New(link.Options{Devices: []link.Device{da}})
	lb, _ := link.New(link.Options{Devices: []link.Device{db}})
	mk := func(ep *link.Endpoint, addr string) *stack.Stack {
		st, err := stack.New(stack.Config{MaxSockets: 32, Links: []stack.LinkConfig{{Name: "eth0", Endpoint: ep,
			Addrs: []netip.Prefix{netip.MustParsePrefix(addr)}}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		return st
	}
	a, b := mk(la, "10.0.9.1/24"), mk(lb, "10.0.9.2/24")
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.New(a, la))
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tapstack_sockets_limit Capacity of the socket table.
# TYPE tapstack_sockets_limit gauge
tapstack_sockets_limit 32
`), "tapstack_sockets_limit"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndLint(reg); err != nil || len(n) != 0 {
		t.Fatalf("lint: %v %v", n, err)
	}
	rxBefore := value(t, reg, "tapstack_nic_rx_bytes_total", map[string]string{"nic": "eth0"})

	ln, _ := sockets.New(a, sockets.AF_INET, sockets.SOCK_STREAM, 0)
	defer ln.Close()
	ln.Bind(sockets.Addr{Port: 7000})
	ln.Listen(1)
	if got := value(t, reg, "tapstack_sockets_in_use", nil); got != 1 {
		t.Fatalf("sockets_in_use = %v with one listener", got)
	}
	const size = 1 << 20
	done := make(chan int)
	go func() {
		c, _, err := ln.Accept()
		if err != nil {
			done <- -1
			return
		}
		defer c.Close()
		n := 0
		for {
			p, err := c.Recv(65536, 0)
			if err != nil || len(p) == 0 {
				done <- n
				return
			}
			n += len(p)
		}
	}()
	c, _ := sockets.New(b, sockets.AF_INET, sockets.SOCK_STREAM, 0)
	if err := c.Connect(sockets.Addr{Host: "10.0.9.1", Port: 7000}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendAll(make([]byte, size), 0); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n := <-done; n != size {
		t.Fatalf("received %d bytes", n)
	}
	if got := value(t, reg, "tapstack_nic_rx_bytes_total", map[string]string{"nic": "eth0"}) - rxBefore; got < size {
		t.Errorf("nic_rx_bytes moved by %v, want at least %d", got, size)
	}
	if got := value(t, reg, "tapstack_tcp_passive_opens_total", nil); got != 1 {
		t.Errorf("tcp_passive_opens_total = %v, want 1", got)
	}
	if got := value(t, reg, "tapstack_link_bytes_total", map[string]string{"direction": "in"}); got < size {
		t.Errorf("link_bytes_total{in} = %v, want at least %d", got, size)
	}
}
