// Package pollbench measures which way of waiting for a socket is
// fastest from Go for a run-to-completion relay loop: a 1-byte
// ping-pong, over an AF_UNIX socketpair and over a TCP loopback
// connection, whose echo side waits in one of six ways — a
// level-triggered epoll_pwait on a locked OS thread (blocking through
// syscall.Syscall6, or first spinning with timeout 0 for up to 50 µs),
// gVisor's blocking ppoll (entered the way its rawfile.BlockingPoll
// enters it, with entersyscallblock, or through syscall.Syscall6), and
// Go's netpoller (a net.Conn's blocking Read, or SyscallConn().Read with
// internal/nbio inside the callback, as relay/splice.go reads). The ping
// side is the same for all: the benchmark's goroutine, locked to its
// thread, making blocking read and write calls on a blocking descriptor.
// Besides ns/op and allocs/op per exchange it reports the process's CPU
// time (getrusage user + system) and context switches (voluntary +
// involuntary) per exchange, both sides included.
package pollbench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/internal/nbio"
)

// spinBudget is how long the spinning epoll variant polls with timeout 0
// before it blocks.
const spinBudget = 50 * time.Microsecond

// A transport makes a connected pair of stream sockets: the echo side's
// and the ping side's, both blocking.
type transport struct {
	name string
	pair func() (echo, ping int, err error)
}

var transports = []transport{
	{"unix", unixPair},
	{"tcp", tcpPair},
}

// An echoer echoes what it reads on fd until the end of the stream, and
// then closes fd. It owns fd from the call on, whatever it returns.
type echoer struct {
	name string
	echo func(fd int) error
}

var echoers = []echoer{
	{"epoll", func(fd int) error { return epollEcho(fd, 0) }},
	{"epoll-spin", func(fd int) error { return epollEcho(fd, spinBudget) }},
	{"ppoll-gvisor", func(fd int) error { return ppollEcho(fd, gvisorPoll) }},
	{"ppoll-syscall", func(fd int) error { return ppollEcho(fd, syscallPoll) }},
	{"netpoll-conn", connEcho},
	{"netpoll-rawconn", rawConnEcho},
}

func unixPair() (echo, ping int, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, err
	}
	return fds[0], fds[1], nil
}

func tcpPair() (echo, ping int, err error) {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, err
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return -1, -1, err
	}
	if err := unix.Listen(ln, 1); err != nil {
		return -1, -1, err
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		return -1, -1, err
	}
	ping, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, err
	}
	if err := unix.Connect(ping, sa); err != nil {
		unix.Close(ping)
		return -1, -1, err
	}
	echo, _, err = unix.Accept4(ln, unix.SOCK_CLOEXEC)
	if err != nil {
		unix.Close(ping)
		return -1, -1, err
	}
	for _, fd := range []int{echo, ping} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			unix.Close(echo)
			unix.Close(ping)
			return -1, -1, err
		}
	}
	return echo, ping, nil
}

// writeAll writes p to the non-blocking fd, calling waitOut while the
// socket is full.
func writeAll(fd int, p []byte, waitOut func(fd int) error) error {
	for len(p) > 0 {
		n, err := nbio.Write(fd, p)
		switch {
		case err == unix.EAGAIN:
			if err := waitOut(fd); err != nil {
				return err
			}
			continue
		case err != nil:
			return err
		}
		p = p[n:]
	}
	return nil
}

// pollOut waits for room in fd's send buffer (not on the measured path:
// a 1-byte exchange never fills it).
func pollOut(fd int) error {
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, -1)
		if err != unix.EINTR {
			return err
		}
	}
}

// epollEcho is variants (a) and (a2): a level-triggered epoll set on a
// locked OS thread. Each wait first polls with timeout 0 for up to spin
// (straight to the kernel: it cannot block), then blocks in epoll_pwait
// through syscall.Syscall6, which lets the runtime hand the thread's P
// to another thread. Reads and writes are internal/nbio's.
func epollEcho(fd int, spin time.Duration) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer unix.Close(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return err
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(ep)
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		return err
	}
	evs := new([8]unix.EpollEvent)
	buf := make([]byte, 64)
	for {
		if err := epollWait(ep, evs, spin); err != nil {
			return err
		}
		n, err := nbio.Read(fd, buf)
		switch {
		case err == unix.EAGAIN:
			continue
		case err != nil:
			return err
		case n == 0:
			return nil
		}
		if err := writeAll(fd, buf[:n], pollOut); err != nil {
			return err
		}
	}
}

// epollWait waits until the epoll set ep has an event.
func epollWait(ep int, evs *[8]unix.EpollEvent, spin time.Duration) error {
	if spin > 0 {
		start := time.Now()
		for {
			n, _, e := syscall.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), 0, 0, 0)
			switch {
			case e == 0 && n > 0:
				return nil
			case e != 0 && e != unix.EINTR:
				return e
			}
			if time.Since(start) >= spin {
				break
			}
		}
	}
	for {
		n, _, e := syscall.Syscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), ^uintptr(0), 0, 0)
		switch {
		case e == 0 && n > 0:
			return nil
		case e != 0 && e != unix.EINTR:
			return e
		}
	}
}

// pollSet is the pollfd array of a ppoll; on the heap, so that it stays
// put while the kernel holds its address.
type pollSet struct {
	fds [1]unix.PollFd
}

//go:linkname entersyscallblock runtime.entersyscallblock
func entersyscallblock()

//go:linkname exitsyscall runtime.exitsyscall
func exitsyscall()

// gvisorPoll blocks in ppoll the way gVisor's rawfile.BlockingPoll
// does on amd64 and arm64 (there in assembly): entersyscallblock hands
// the P off at once, rather than leaving it to the runtime's monitor
// thread to take after 20 µs.
//
//go:nosplit
//go:norace
func gvisorPoll(ps *pollSet) syscall.Errno {
	entersyscallblock()
	_, _, e := syscall.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&ps.fds[0])), uintptr(len(ps.fds)), 0, 0, 0, 0)
	exitsyscall()
	return e
}

// syscallPoll blocks in ppoll through syscall.Syscall6, as gVisor's
// rawfile does on the other architectures.
func syscallPoll(ps *pollSet) syscall.Errno {
	_, _, e := syscall.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&ps.fds[0])), uintptr(len(ps.fds)), 0, 0, 0, 0)
	return e
}

// ppollEcho is variant (b), gVisor's fdbased dispatcher: a goroutine
// reads the non-blocking fd and, when it has nothing, blocks in ppoll
// until it is readable.
func ppollEcho(fd int, poll func(*pollSet) syscall.Errno) error {
	defer unix.Close(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return err
	}
	ps := &pollSet{}
	waitOut := func(fd int) error {
		ps.fds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT}
		if e := poll(ps); e != 0 && e != unix.EINTR {
			return e
		}
		return nil
	}
	buf := make([]byte, 64)
	for {
		n, err := nbio.Read(fd, buf)
		switch {
		case err == unix.EAGAIN:
			ps.fds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
			if e := poll(ps); e != 0 && e != unix.EINTR {
				return e
			}
			continue
		case err != nil:
			return err
		case n == 0:
			return nil
		}
		if err := writeAll(fd, buf[:n], waitOut); err != nil {
			return err
		}
	}
}

// fileConn makes a net.Conn of fd, in Go's poller; fd is closed.
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "echo")
	c, err := net.FileConn(f)
	f.Close()
	return c, err
}

// connEcho is variant (c), what the relay does now: a goroutine making
// blocking reads and writes on a net.Conn (Go's edge-triggered poller).
func connEcho(fd int) error {
	c, err := fileConn(fd)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for {
		n, err := c.Read(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return err
		}
	}
}

// rawEcho is the state of rawConnEcho, with its callbacks made once (as
// relay/splice.go's hostReader does).
type rawEcho struct {
	buf     []byte
	n, w    int
	err     error
	readFn  func(uintptr) bool
	writeFn func(uintptr) bool
}

func (r *rawEcho) read(fd uintptr) bool {
	r.n, r.err = nbio.Read(int(fd), r.buf)
	return r.err != unix.EAGAIN // wait in the poller
}

func (r *rawEcho) write(fd uintptr) bool {
	for r.w < r.n {
		n, err := nbio.Write(int(fd), r.buf[r.w:r.n])
		if err == unix.EAGAIN {
			return false
		}
		if err != nil {
			r.err = err
			return true
		}
		r.w += n
	}
	return true
}

// rawConnEcho is variant (c2), what relay/splice.go does now: Go's
// poller waits, internal/nbio reads and writes inside
// SyscallConn().Read and .Write.
func rawConnEcho(fd int) error {
	c, err := fileConn(fd)
	if err != nil {
		return err
	}
	defer c.Close()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	r := &rawEcho{buf: make([]byte, 64)}
	r.readFn, r.writeFn = r.read, r.write
	for {
		if err := rc.Read(r.readFn); err != nil {
			return err
		}
		switch {
		case r.err != nil:
			return r.err
		case r.n == 0:
			return nil
		}
		r.w = 0
		if err := rc.Write(r.writeFn); err != nil {
			return err
		}
		if r.err != nil {
			return r.err
		}
	}
}

// exchange sends one byte on the blocking fd and reads its echo.
func exchange(fd int, msg *[1]byte, b byte) error {
	msg[0] = b
	if n, err := unix.Write(fd, msg[:]); err != nil || n != 1 {
		return fmt.Errorf("ping write: %d, %v", n, err)
	}
	msg[0] = ^b
	n, err := unix.Read(fd, msg[:])
	switch {
	case err != nil:
		return fmt.Errorf("ping read: %v", err)
	case n != 1:
		return errors.New("ping read: the echo side ended")
	case msg[0] != b:
		return fmt.Errorf("echo of %#x came back as %#x", b, msg[0])
	}
	return nil
}

// session is one ping-pong: the echo side on its goroutine, the ping
// side on the caller's.
type session struct {
	ping int
	done chan error
	msg  [1]byte
}

func start(tr transport, e echoer) (*session, error) {
	echoFD, ping, err := tr.pair()
	if err != nil {
		return nil, err
	}
	s := &session{ping: ping, done: make(chan error, 1)}
	go func() { s.done <- e.echo(echoFD) }()
	return s, nil
}

// run makes n exchanges.
func (s *session) run(n int) error {
	for i := range n {
		if err := exchange(s.ping, &s.msg, byte(i)); err != nil {
			return err
		}
	}
	return nil
}

// stop ends the stream, waits for the echo side to end and closes the
// ping side: the first error of the two sides.
func (s *session) stop(err error) error {
	unix.Shutdown(s.ping, unix.SHUT_WR)
	echoErr := <-s.done
	unix.Close(s.ping)
	if err != nil {
		return err
	}
	if echoErr != nil {
		return fmt.Errorf("echo side: %v", echoErr)
	}
	return nil
}

func rusage(b *testing.B) unix.Rusage {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru
}

// BenchmarkPingPong: one op is one exchange of a byte each way.
func BenchmarkPingPong(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			for _, e := range echoers {
				b.Run(e.name, func(b *testing.B) { benchPingPong(b, tr, e) })
			}
		})
	}
}

func benchPingPong(b *testing.B, tr transport, e echoer) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	s, err := start(tr, e)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.run(1000); err != nil { // warm up
		b.Fatal(s.stop(err))
	}
	b.ReportAllocs()
	r0 := rusage(b)
	b.ResetTimer()
	err = s.run(b.N)
	b.StopTimer()
	r1 := rusage(b)
	if err := s.stop(err); err != nil {
		b.Fatal(err)
	}
	cpu := r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano()
	csw := r1.Nvcsw + r1.Nivcsw - r0.Nvcsw - r0.Nivcsw
	b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64(csw)/float64(b.N), "ctxsw/op")
}

// TestPingPong checks that every echo side echoes, and ends and closes
// when its stream ends, on both transports.
func TestPingPong(t *testing.T) {
	for _, tr := range transports {
		for _, e := range echoers {
			t.Run(tr.name+"/"+e.name, func(t *testing.T) {
				s, err := start(tr, e)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.stop(s.run(300)); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
