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
