package sockets_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/tapstack/tapstack/sockets"
)

// TestTransmitQueues moves 4 MiB each way between two stacks whose links
// send through FIFO transmit queues, and checks that closing the stacks
// stops the queues' goroutines.
func TestTransmitQueues(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("transfer", func(t *testing.T) {
		p := newPairQueued(t, 0, 2)
		want := make([]byte, 4<<20)
		rand.Read(want)
		ln := mustSocket(t, p.a, sockets.AF_INET6, sockets.SOCK_STREAM)
		if err := ln.Bind(sockets.Addr{Host: "fd09::1"}); err != nil {
			t.Fatal(err)
		}
		if err := ln.Listen(1); err != nil {
			t.Fatal(err)
		}
		la, _ := ln.GetSockName()
		echoed := make(chan error, 1)
		go func() {
			c, _, err := ln.Accept()
			if err != nil {
				echoed <- err
				return
			}
			defer c.Close()
			conn := sockets.NewConn(c)
			_, err = io.Copy(conn, conn)
			if err == nil {
				err = conn.CloseWrite()
			}
			echoed <- err
		}()
		c := mustSocket(t, p.b, sockets.AF_INET6, sockets.SOCK_STREAM)
		if err := c.Connect(la); err != nil {
			t.Fatal(err)
		}
		conn := sockets.NewConn(c)
		go func() {
			conn.Write(want)
			conn.CloseWrite()
		}()
		got, err := io.ReadAll(conn)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("echoed %d bytes, want the %d sent", len(got), len(want))
		}
		if err := <-echoed; err != nil {
			t.Fatal(err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, want %d\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
