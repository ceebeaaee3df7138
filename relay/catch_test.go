package relay

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack"
)

// gatewayPair is a gateway stack gw (10.0.9.1, fd09::1, promiscuous, its
// init installing whatever init does) and a client stack c (10.0.9.2,
// fd09::2) whose default routes point at gw.
func gatewayPair(t testing.TB, init func(*stack.Stack) error) (gw, c *stack.Stack) {
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
	gw, err = stack.New(stack.Config{Init: init, Links: []stack.LinkConfig{{
		Name: "eth0", Endpoint: la, Gateway: true,
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.9.1/24"), netip.MustParsePrefix("fd09::1/64")},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	c, err = stack.New(stack.Config{Links: []stack.LinkConfig{{
		Name: "eth0", Endpoint: lb,
		Addrs:    []netip.Prefix{netip.MustParsePrefix("10.0.9.2/24"), netip.MustParsePrefix("fd09::2/64")},
		Gateway4: netip.MustParseAddr("10.0.9.1"), Gateway6: netip.MustParseAddr("fd09::1"),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return gw, c
}

// TestForwarderUnreachableAfterRetransmittedSYNs: a handler that answers
// "host unreachable" after the peers retransmitted their SYNs, three waves
// of connections that fill the in-flight limit. It panicked on the third
// wave (a second Complete when the SYN copy was missing: the copies of
// retransmitted SYNs leaked until their map was full).
func TestForwarderUnreachableAfterRetransmittedSYNs(t *testing.T) {
	const maxInFlight, perWave, waves = 8, 8, 3
	var stats func() catchStats
	gw, c := gatewayPair(t, func(st *stack.Stack) error {
		stats = catchTCP(st, maxInFlight, func(r *tcpRequest) {
			time.Sleep(1100 * time.Millisecond) // past the first SYN retransmission
			r.Unreachable(r.ID.Dst.Addr().Is6())
		})
		return nil
	})
	_ = gw
	for wave := 0; wave < waves; wave++ {
		var wg sync.WaitGroup
		errs := make(chan error, perWave)
		for i := 0; i < perWave; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fam, host, want := sockets.AF_INET, fmt.Sprintf("192.0.2.%d", i+1), syscall.EHOSTUNREACH
				if i%2 == 1 {
					fam, host, want = sockets.AF_INET6, fmt.Sprintf("2001:db8::%x", i+1), syscall.ENETUNREACH
				}
				s, err := sockets.New(c, fam, sockets.SOCK_STREAM, 0)
				if err != nil {
					errs <- err
					return
				}
				defer s.Close()
				s.SetTimeout(30 * time.Second)
				if err := s.Connect(sockets.Addr{Host: host, Port: 80 + wave}); !errors.Is(err, want) {
					errs <- fmt.Errorf("connect %s: %v, want %v", host, err, want)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	// A handler counts as in flight until it returns, which is just after
	// its ICMP error ended the connect: give the last ones a moment.
	deadline := time.Now().Add(2 * time.Second)
	for stats().InFlight != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := stats(); st.InFlight != 0 {
		t.Fatalf("%d requests still in flight 2 s after every connect ended", st.InFlight)
	}
}

// TestForwardedPortReuseAfterActiveClose: the gateway side closes first
// (as a relay does when the host server closes first), so its side of
// the connection ends in TIME-WAIT; the client then connects again from
// the same port, as Linux does once its own side is closed. With Close
// the new SYN met the TIME-WAIT endpoint (gVisor hands it on only to a
// listener) and the connect waited for retransmissions; with
// CloseWithoutTimeWait it is answered at once.
func TestForwardedPortReuseAfterActiveClose(t *testing.T) {
	done := make(chan struct{}, 4)
	_, c := gatewayPair(t, func(st *stack.Stack) error {
		catchTCP(st, 8, func(r *tcpRequest) {
			s, err := r.Accept()
			if err != nil {
				return
			}
			s.SendAll([]byte("hi"), 0)
			s.Shutdown(sockets.SHUT_WR) // the gateway closes first
			s.SetTimeout(5 * time.Second)
			for {
				if b, err := s.Recv(10, 0); err != nil || len(b) == 0 {
					break
				}
			}
			s.CloseWithoutTimeWait(time.Second)
			done <- struct{}{}
		})
		return nil
	})
	for round := 0; round < 3; round++ {
		// The client stack's own old socket may hold the port a moment
		// longer (its last ACK in flight): that is the client's business.
		var s *sockets.Socket
		for tries := 0; ; tries++ {
			var err error
			s, err = sockets.New(c, sockets.AF_INET, sockets.SOCK_STREAM, 0)
			if err != nil {
				t.Fatal(err)
			}
			s.SetSockOpt(sockets.SOL_SOCKET, sockets.SO_REUSEADDR, 1)
			if err := s.Bind(sockets.Addr{Host: "10.0.9.2", Port: 40404}); err != nil {
				t.Fatalf("round %d: bind: %v", round, err)
			}
			s.SetTimeout(5 * time.Second)
			start := time.Now()
			err = s.Connect(sockets.Addr{Host: "192.0.2.7", Port: 80})
			if errors.Is(err, syscall.EADDRNOTAVAIL) && tries < 100 {
				s.Close()
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if err != nil {
				t.Fatalf("round %d: connect: %v", round, err)
			}
			if d := time.Since(start); d > 900*time.Millisecond {
				t.Fatalf("round %d: connect took %v: the SYN waited for a retransmission", round, d)
			}
			break
		}
		for {
			if b, err := s.Recv(10, 0); err != nil || len(b) == 0 {
				break
			}
		}
		s.Close()
		<-done
	}
}
