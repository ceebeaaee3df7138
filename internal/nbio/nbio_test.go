package nbio

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// pair returns a non-blocking datagram socket pair, closed at the end.
func pair(t *testing.T) (a, b int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func TestReadWrite(t *testing.T) {
	a, b := pair(t)
	buf := make([]byte, 100)
	if n, err := Read(b, buf); err != unix.EAGAIN || n != 0 {
		t.Fatalf("read of an empty socket: %d, %v; want 0, EAGAIN", n, err)
	}
	if n, err := Write(a, []byte("hello")); err != nil || n != 5 {
		t.Fatalf("write: %d, %v", n, err)
	}
	n, err := Read(b, buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read: %q, %v", buf[:n], err)
	}
	if _, err := Read(-1, buf); !errors.Is(err, unix.EBADF) {
		t.Fatalf("read of fd -1: %v, want EBADF", err)
	}
	if _, err := Write(a, nil); err != nil {
		t.Fatalf("empty write: %v", err)
	}
}

func TestWritevJoinsBuffers(t *testing.T) {
	for _, count := range []int{1, 3, maxIovecs, maxIovecs + 5} {
		a, b := pair(t)
		var bufs [][]byte
		var want []byte
		for i := range count {
			p := bytes.Repeat([]byte{byte('a' + i%26)}, i+1)
			if i == 1 {
				p = nil // empty buffers are skipped
			}
			bufs = append(bufs, p)
			want = append(want, p...)
		}
		n, err := Writev(a, bufs)
		if err != nil || n != len(want) {
			t.Fatalf("%d buffers: writev %d, %v; want %d", count, n, err, len(want))
		}
		got := make([]byte, 1000)
		m, err := Read(b, got)
		if err != nil || !bytes.Equal(got[:m], want) {
			t.Fatalf("%d buffers: read %q, %v; want %q", count, got[:m], err, want)
		}
	}
}

func TestNoAllocation(t *testing.T) {
	a, b := pair(t)
	msg := [][]byte{[]byte("head"), []byte("body")}
	buf := make([]byte, 64)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Writev(a, msg); err != nil {
			t.Fatal(err)
		}
		if _, err := Read(b, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := Read(b, buf); err != unix.EAGAIN {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per writev, read and EAGAIN; want 0", allocs)
	}
}

func TestLargeCallsAndReader(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
	big := bytes.Repeat([]byte("0123456789abcdef"), 4*Small/16)
	var r Reader
	buf := make([]byte, 4*Small)
	for i, size := range []int{10, 2 * Small, Small, 2 * Small, 1, 3 * Small} {
		var n int
		var err error
		if i%2 == 0 {
			n, err = Write(fds[0], big[:size])
		} else {
			n, err = Writev(fds[0], [][]byte{big[:size/2], big[size/2 : size]})
		}
		if err != nil || n != size {
			t.Fatalf("write of %d: %d, %v", size, n, err)
		}
		got := 0
		for got < size {
			m, err := r.Read(fds[1], buf[got:])
			if err != nil {
				t.Fatalf("read of %d after %d: %v", size, got, err)
			}
			got += m
		}
		if !bytes.Equal(buf[:got], big[:size]) {
			t.Fatalf("%d bytes came back changed", size)
		}
		if want := got > Small; r.large != want {
			t.Fatalf("after a read of %d, large = %v", got, r.large)
		}
	}
}
