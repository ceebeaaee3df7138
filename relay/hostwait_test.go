package relay

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// hostPair is a connected loopback pair; the first end is the one
// waited on.
func hostPair(t *testing.T) (*net.TCPConn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	far, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	near, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { near.Close(); far.Close() })
	return near.(*net.TCPConn), far
}

func fdOf(t *testing.T, c *net.TCPConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	rc.Control(func(u uintptr) { fd = int(u) })
	return fd
}

func TestHostWaiterFiresOnceOnDataCancelOrClose(t *testing.T) {
	hw, err := newHostWaiter()
	if err != nil {
		t.Fatal(err)
	}
	defer hw.Close()
	fired := make(chan int, 10)

	// Readable: fires once.
	near, far := hostPair(t)
	cancel, err := hw.wait(fdOf(t, near), func() { fired <- 1 })
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
		t.Fatal("fired with nothing to read")
	case <-time.After(50 * time.Millisecond):
	}
	far.Write([]byte("x"))
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("did not fire when readable")
	}
	cancel() // after it fired: nothing more
	far.Write([]byte("y"))
	select {
	case <-fired:
		t.Fatal("a one-shot wait fired twice")
	case <-time.After(50 * time.Millisecond):
	}

	// Cancelled before anything comes: fires at once, once.
	near2, _ := hostPair(t)
	cancel2, err := hw.wait(fdOf(t, near2), func() { fired <- 2 })
	if err != nil {
		t.Fatal(err)
	}
	cancel2()
	cancel2()
	if v := <-fired; v != 2 || len(fired) != 0 || hw.pending() != 0 {
		t.Fatalf("cancel: fired %d, %d more, %d pending", v, len(fired), hw.pending())
	}

	// Hung up: fires.
	near3, far3 := hostPair(t)
	if _, err := hw.wait(fdOf(t, near3), func() { fired <- 3 }); err != nil {
		t.Fatal(err)
	}
	far3.Close()
	select {
	case v := <-fired:
		if v != 3 {
			t.Fatalf("fired %d", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("did not fire on hang-up")
	}
}

func TestHostWaiterCloseRunsWhatIsArmed(t *testing.T) {
	hw, err := newHostWaiter()
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	for i := 0; i < 20; i++ {
		near, _ := hostPair(t)
		if _, err := hw.wait(fdOf(t, near), func() { n.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	hw.Close()
	hw.Close()
	if n.Load() != 20 {
		t.Fatalf("%d of 20 waits ran at Close", n.Load())
	}
	near, _ := hostPair(t)
	if _, err := hw.wait(fdOf(t, near), func() {}); err != errWaiterClosed {
		t.Fatalf("wait after Close: %v", err)
	}
}
