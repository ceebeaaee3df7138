package sockets

import (
	"errors"
	"syscall"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tapstack/tapstack/stack"
)

// TestSlotReservedBeforeCloseDoesNotSurvive: a slot reserved before the
// stack's Close and filled after it must not leave a live socket behind.
func TestSlotReservedBeforeCloseDoesNotSurvive(t *testing.T) {
	st, err := stack.New(stack.Config{MaxSockets: 4})
	if err != nil {
		t.Fatal(err)
	}
	tbl := tableOf(st)
	fd, err := tbl.reserve()
	if err != nil {
		t.Fatal(err)
	}
	wq := new(waiter.Queue)
	ep, terr := st.GV().NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, wq)
	if terr != nil {
		t.Fatal(terr)
	}
	st.Close()
	s, err := newSocket(st, tbl, fd, AF_INET, SOCK_STREAM, IPPROTO_TCP, ep, wq)
	if s != nil || !errors.Is(err, syscall.ENETDOWN) {
		t.Fatalf("newSocket after Close = %v, %v; want ENETDOWN", s, err)
	}
	if info := Table(st); info.InUse != 0 {
		t.Fatalf("%d slots in use after Close", info.InUse)
	}
	if _, err := New(st, AF_INET, SOCK_STREAM, 0); !errors.Is(err, syscall.ENETDOWN) {
		t.Fatalf("New after Close: %v", err)
	}
}
