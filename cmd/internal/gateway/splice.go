package gateway

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/sockets"
)

// spliceBufs holds the buffers of the host→namespace copies. A relay
// takes one only when the host socket has data and gives it back before
// it waits again, so idle connections hold none.
var spliceBufs = sync.Pool{New: func() any {
	b := make([]byte, 64<<10)
	return &b
}}

// splice copies both ways until both ends finished; a FIN is passed on as
// a FIN, a reset (seen on either side, by a read or a write) as a reset of
// the other side. Host → namespace runs on a goroutine that start
// starts, namespace → host on one started only while there is data to
// move (start false: it could not, and the connection is reset); done
// runs once both directions have ended. upDone, if not nil, runs once
// the namespace → host direction has ended: everything the namespace
// sent is in the host socket (or the connection was reset).
// f, if not nil, counts the bytes.
func splice(ns *sockets.Conn, host *net.TCPConn, f *flow, start func(func()) bool, upDone, done func()) {
	if upDone != nil {
		upDone = sync.OnceFunc(upDone)
	} else {
		upDone = func() {}
	}
	var once sync.Once
	reset := func() {
		once.Do(func() {
			_ = host.SetLinger(0)
			_ = ns.Socket().SetLinger(sockets.Linger{On: true, Seconds: 0})
			host.Close()
			ns.Close()
		})
	}
	rc, err := host.SyscallConn()
	if err != nil {
		reset()
		upDone()
		done()
		return
	}
	// finish acts on how one direction ended: the end of its source is
	// passed on as a FIN, a reset on either side resets both.
	// Any other error (a host side that timed out or became unreachable
	// mid-stream) resets both too: a stream that can go no further must
	// not stay open on the other side.
	finish := func(dst interface{ CloseWrite() error }, readErr, writeErr error) {
		f.halfClosed()
		switch {
		case writeErr == nil && (readErr == nil || readErr == io.EOF):
			_ = dst.CloseWrite()
		default:
			reset()
		}
	}
	var left atomic.Int32
	left.Store(2)
	end := func() {
		if left.Add(-1) == 0 {
			done()
		}
	}
	if !start(func() {
		defer end()
		r, w := hostToNS(rc, ns, f)
		finish(ns, r, w)
	}) {
		reset()
		upDone()
		end()
		end()
		return
	}
	// Namespace → host keeps no goroutine while idle: the socket kicks
	// when it may have data, and a goroutine drains it into the host
	// socket (waiting there only while the host is full), then ends.
	// kick must not block: it runs while the stack delivers the event.
	var running, ended, armed atomic.Bool
	var stopNotify func()
	endNS := func(readErr, writeErr error) {
		if ended.CompareAndSwap(false, true) {
			stopNotify()
			finish(host, readErr, writeErr)
			upDone()
			end()
		}
	}
	drain := func() {
		for {
			readErr, writeErr, idle := drainOnce(ns, rc, f)
			if !idle {
				endNS(readErr, writeErr)
				return
			}
			running.Store(false)
			// A kick between the last read and the store found running
			// set and did nothing: look again.
			if !readable(ns) || !running.CompareAndSwap(false, true) {
				return
			}
		}
	}
	kick := func() {
		if !armed.Load() || ended.Load() || !running.CompareAndSwap(false, true) {
			return
		}
		if !start(drain) {
			// The gateway is closing and closes both sockets itself.
			// Nothing more happens here: kick runs inside the stack's
			// event delivery, where unregistering or closing would
			// wait on locks held by its caller.
			ended.Store(true)
			upDone()
		}
	}
	stopNotify = ns.Socket().Notify(sockets.POLLIN, kick)
	armed.Store(true)
	kick() // data may have come before Notify
}

// readable says whether the namespace socket has data, an end or an
// error to act on.
func readable(ns *sockets.Conn) bool {
	n, _ := sockets.Poll([]sockets.PollFD{{Socket: ns.Socket(), Events: sockets.POLLIN}}, 0)
	return n > 0
}

// drainOnce moves what the namespace socket holds into the host socket,
// straight from the stack's buffers, waiting only for room on the host.
// idle means the namespace socket is empty for now; otherwise its stream
// ended (readErr nil) or an error ended it.
func drainOnce(ns *sockets.Conn, rc syscall.RawConn, f *flow) (readErr, writeErr error, idle bool) {
	var err error
	// RawConn.Write waits for room in the send buffer each time the
	// callback returns false (the host socket is full).
	if perr := rc.Write(func(fd uintptr) bool {
		var n int64
		n, err = ns.DrainTo(fdWriter(fd), sockets.MSG_DONTWAIT)
		f.moved(true, int(n))
		return !errors.Is(err, errHostFull)
	}); perr != nil {
		return nil, perr, false
	}
	if errors.Is(err, syscall.EAGAIN) {
		return nil, nil, true
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return nil, err, false
	}
	return err, nil, false
}

// errHostFull says the host socket's send buffer is full.
var errHostFull = errors.New("host socket send buffer full")

// fdWriter writes to a non-blocking host socket; what does not fit is
// left with errHostFull.
type fdWriter uintptr

func (fd fdWriter) Write(b []byte) (int, error) {
	n, err := unix.Write(int(fd), b)
	switch {
	case err == unix.EAGAIN:
		return 0, errHostFull
	case err != nil:
		return 0, os.NewSyscallError("write", err)
	case n < len(b):
		return n, errHostFull
	}
	return n, nil
}

// hostToNS copies the host socket's stream into the namespace's. It
// holds a buffer while data keeps coming and gives it back whenever the
// host socket runs dry.
func hostToNS(rc syscall.RawConn, ns *sockets.Conn, f *flow) (readErr, writeErr error) {
	var bp *[]byte
	defer func() {
		if bp != nil {
			spliceBufs.Put(bp)
		}
	}()
	for {
		var n int
		var err error
		if perr := rc.Read(func(fd uintptr) bool {
			if bp == nil {
				bp = spliceBufs.Get().(*[]byte)
			}
			n, err = unix.Read(int(fd), *bp)
			if err == unix.EAGAIN {
				spliceBufs.Put(bp)
				bp = nil
				return false // wait for data without holding a buffer
			}
			return true
		}); perr != nil {
			return perr, nil
		}
		if err != nil {
			return os.NewSyscallError("read", err), nil
		}
		if n == 0 {
			return io.EOF, nil
		}
		if _, werr := ns.Write((*bp)[:n]); werr != nil {
			return nil, werr
		}
		f.moved(false, n)
	}
}
