package sockets_test

import (
	"testing"
	"time"

	"github.com/tapstack/tapstack/sockets"
)

func TestNotifyCallsOnDataAndClose(t *testing.T) {
	client, server := connectedPair(t)
	ch := make(chan struct{}, 16)
	stop := server.Socket().Notify(sockets.POLLIN, func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	})
	wait := func(what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("no call after %s", what)
		}
	}
	client.Write([]byte("x"))
	wait("data arrived")
	if n, _ := sockets.Poll([]sockets.PollFD{{Socket: server.Socket(), Events: sockets.POLLIN}}, 0); n != 1 {
		t.Fatal("called, but the socket is not readable")
	}
	server.Read(make([]byte, 1))
	for len(ch) > 0 {
		<-ch
	}
	client.Close()
	wait("the peer closed")
	stop()
	stop() // idempotent
	for len(ch) > 0 {
		<-ch
	}
	server.Close()
	select {
	case <-ch:
		t.Fatal("called after stop")
	case <-time.After(100 * time.Millisecond):
	}
}

// A Poll that needs no wait (a zero timeout, or a socket already ready)
// allocates nothing: the relay asks it on every request.
func TestPollWithoutWaitAllocatesNothing(t *testing.T) {
	client, server := connectedPair(t)
	fds := []sockets.PollFD{{Socket: server.Socket(), Events: sockets.POLLIN}}
	if n := testing.AllocsPerRun(100, func() { sockets.Poll(fds, 0) }); n != 0 {
		t.Errorf("Poll with timeout 0 on an idle socket: %v allocations, want 0", n)
	}
	if n, _ := sockets.Poll(fds, 0); n != 0 {
		t.Fatalf("an idle socket polled readable")
	}
	client.Write([]byte("x"))
	if n, _ := sockets.Poll(fds, 5*time.Second); n != 1 || fds[0].Revents&sockets.POLLIN == 0 {
		t.Fatalf("after data: %d ready, revents %#x", n, fds[0].Revents)
	}
	if n := testing.AllocsPerRun(100, func() { sockets.Poll(fds, time.Second) }); n != 0 {
		t.Errorf("Poll on a ready socket: %v allocations, want 0", n)
	}
}
