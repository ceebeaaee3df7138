package sockets_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/tapstack/tapstack/sockets"
)

// connectedPair returns a client Conn on p.b and the server's Conn on p.a.
func connectedPair(t *testing.T) (client, server *sockets.Conn) {
	t.Helper()
	p := newPair(t, 0)
	ln := mustSocket(t, p.a, sockets.AF_INET, sockets.SOCK_STREAM)
	if err := ln.Bind(sockets.Addr{Host: "10.0.9.1"}); err != nil {
		t.Fatal(err)
	}
	if err := ln.Listen(1); err != nil {
		t.Fatal(err)
	}
	la, _ := ln.GetSockName()
	c := mustSocket(t, p.b, sockets.AF_INET, sockets.SOCK_STREAM)
	if err := c.Connect(la); err != nil {
		t.Fatal(err)
	}
	s, _, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return sockets.NewConn(c), sockets.NewConn(s)
}

// limitWriter takes n bytes, then fails.
type limitWriter struct {
	buf bytes.Buffer
	n   int
}

var errFull = errors.New("full")

func (w *limitWriter) Write(b []byte) (int, error) {
	if room := w.n - w.buf.Len(); len(b) > room {
		w.buf.Write(b[:room])
		return room, errFull
	}
	return w.buf.Write(b)
}

func TestDrainTo(t *testing.T) {
	client, server := connectedPair(t)

	// Nothing to read yet: MSG_DONTWAIT says EAGAIN.
	var got bytes.Buffer
	if n, err := server.DrainTo(&got, sockets.MSG_DONTWAIT); n != 0 || !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("empty stream: %d, %v; want 0 and EAGAIN", n, err)
	}
	if _, err := server.DrainTo(&got, sockets.MSG_PEEK); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("MSG_PEEK: %v, want EOPNOTSUPP", err)
	}

	// A writer that fails after 1000 bytes: its error comes back as is,
	// and what it did not take is still there to read.
	want := make([]byte, 1<<20)
	rand.Read(want)
	go func() {
		client.Write(want)
		client.CloseWrite()
	}()
	lw := &limitWriter{n: 1000}
	for lw.buf.Len() == 0 {
		n, err := server.DrainTo(lw, 0)
		if !errors.Is(err, errFull) || n != 1000 {
			t.Fatalf("limited writer: %d, %v; want 1000 and its error", n, err)
		}
	}
	rest := make([]byte, 10)
	if _, err := io.ReadFull(server, rest); err != nil || !bytes.Equal(rest, want[1000:1010]) {
		t.Fatalf("after the failed drain, read %x, %v; want %x", rest, err, want[1000:1010])
	}

	// The rest, to the end of the stream: nil at the end.
	n, err := server.DrainTo(&got, 0)
	if err != nil || n != int64(len(want)-1010) || !bytes.Equal(got.Bytes(), want[1010:]) {
		t.Fatalf("drain to the end: %d, %v; want %d bytes equal to those sent", n, err, len(want)-1010)
	}

	// Closed from another goroutine while waiting: net.ErrClosed.
	client2, server2 := connectedPair(t)
	defer client2.Close()
	go func() {
		time.Sleep(50 * time.Millisecond)
		server2.Close()
	}()
	if _, err := server2.DrainTo(&got, 0); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("closed while draining: %v, want EBADF", err)
	}
}
