package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/internal/nbio"
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
func splice(ns *sockets.Conn, host *net.TCPConn, f *flow, hw *hostWaiter, start func(func()) bool, upDone, done func()) {
	// One object holds a connection's relay state, and its methods are
	// what the goroutines run: an idle relayed connection costs this
	// object, not a closure and a heap cell per variable.
	r := &spliceState{ns: ns, host: host, f: f, hw: hw, start: start, upDoneFn: upDone, done: done, fd: -1}
	r.left.Store(2)
	rc, err := host.SyscallConn()
	if err != nil {
		r.reset()
		r.upDone()
		done()
		return
	}
	r.rc = rc
	// Host → namespace copies while the host socket has data, then
	// waits on hw without a goroutine, and starts again when it is
	// readable.
	if err := rc.Control(func(u uintptr) { r.fd = int(u) }); err != nil || !start(r.copyDown) {
		r.reset()
		r.upDone()
		r.end()
		r.end()
		return
	}
	// Namespace → host keeps no goroutine while idle: the socket kicks
	// when it may have data, and a goroutine drains it into the host
	// socket (waiting there only while the host is full). Once the
	// socket is empty, a goroutine that moved data waits up to
	// nsIdleHandoff for the next kick, so that an exchange does not
	// start (and grow the stack of) a goroutine per request; one that
	// found nothing ends at once.
	r.stopNotify = ns.Socket().Notify(sockets.POLLIN, r.kick)
	r.armed.Store(true)
	r.kick() // data may have come before Notify
}

// spliceState is one relayed connection's splice.
type spliceState struct {
	ns    *sockets.Conn
	host  *net.TCPConn
	rc    syscall.RawConn
	fd    int // host's
	f     *flow
	hw    *hostWaiter
	start func(func()) bool

	upDoneFn     func() // may be nil
	upDoneCalled atomic.Bool
	done         func()
	left         atomic.Int32 // directions still running; done runs at 0

	resetOnce sync.Once

	// downMu guards the host → namespace direction's wait for the host
	// socket, while it has nothing to read.
	downMu     sync.Mutex
	downCancel func() // the armed wait; protected by downMu
	downReset  bool   // the sockets are being closed; protected by downMu

	// The namespace → host drainer: see splice.
	state      atomic.Int32 // drainIdle, drainRunning or drainParked
	ended      atomic.Bool
	armed      atomic.Bool
	wakeCh     chan struct{} // made by the drainer before it first parks
	stopNotify func()
}

// upDone runs the caller's upDone once.
func (r *spliceState) upDone() {
	if r.upDoneFn != nil && r.upDoneCalled.CompareAndSwap(false, true) {
		r.upDoneFn()
	}
}

// end marks one direction ended; done runs after the second.
func (r *spliceState) end() {
	if r.left.Add(-1) == 0 {
		r.done()
	}
}

// reset closes both sockets with a reset, once.
func (r *spliceState) reset() {
	r.resetOnce.Do(func() {
		// A wait armed on the host socket would never fire once it is
		// closed: end it first, so the direction sees the close.
		r.downMu.Lock()
		r.downReset = true
		cancel := r.downCancel
		r.downCancel = nil
		r.downMu.Unlock()
		if cancel != nil {
			cancel()
		}
		_ = r.host.SetLinger(0)
		_ = r.ns.Socket().SetLinger(sockets.Linger{On: true, Seconds: 0})
		r.host.Close()
		r.ns.Close()
	})
}

// finish acts on how one direction ended: the end of its source is
// passed on as a FIN, a reset on either side resets both. Any other
// error (a host side that timed out or became unreachable mid-stream)
// resets both too: a stream that can go no further must not stay open
// on the other side.
func (r *spliceState) finish(dst interface{ CloseWrite() error }, readErr, writeErr error) {
	r.f.halfClosed()
	switch {
	case writeErr == nil && (readErr == nil || readErr == io.EOF):
		_ = dst.CloseWrite()
	default:
		r.reset()
	}
}

func (r *spliceState) endDown(readErr, writeErr error) {
	r.finish(r.ns, readErr, writeErr)
	r.end()
}

// wake runs when the host socket is readable again after a quiet spell.
func (r *spliceState) wake() {
	if !r.start(r.copyDown) {
		// The gateway is closing and closes both sockets.
		r.end()
	}
}

// copyDown moves host → namespace until the host socket has been quiet
// for about hostIdleHandoff, then arms hw to call wake and returns.
func (r *spliceState) copyDown() {
	// A busy connection waits in Go's poller, the fast way; one quiet
	// for about hostIdleHandoff gives its goroutine up. The read
	// deadline that ends the wait is moved on only every half of it,
	// not at each wait (a bulk transfer waits thousands of times a
	// second).
	var deadline time.Time
	h := newHostReader()
	for {
		readErr, writeErr, idle := h.toNS(r.rc, r.ns, r.f)
		if !idle {
			r.endDown(readErr, writeErr)
			return
		}
		if time.Until(deadline) < hostIdleHandoff/2 {
			deadline = time.Now().Add(hostIdleHandoff)
			if err := r.host.SetReadDeadline(deadline); err != nil {
				r.endDown(err, nil)
				return
			}
		}
		more, err := h.waitReadable(r.rc)
		if err != nil {
			r.endDown(err, nil)
			return
		}
		if !more {
			break
		}
	}
	if err := r.host.SetReadDeadline(time.Time{}); err != nil {
		r.endDown(err, nil)
		return
	}
	r.downMu.Lock()
	if r.downReset {
		r.downMu.Unlock()
		r.endDown(net.ErrClosed, nil)
		return
	}
	cancel, err := r.hw.wait(r.fd, r.wake)
	if err != nil {
		r.downMu.Unlock()
		r.endDown(err, nil)
		return
	}
	r.downCancel = cancel
	r.downMu.Unlock()
}

// endNS ends the namespace → host direction.
func (r *spliceState) endNS(readErr, writeErr error) {
	if r.ended.CompareAndSwap(false, true) {
		r.stopNotify()
		r.finish(r.host, readErr, writeErr)
		r.upDone()
		r.end()
	}
}

// drain moves namespace → host until the namespace socket is empty and,
// if it moved data, stays up to nsIdleHandoff for the next kick.
func (r *spliceState) drain() {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	w := newHostWriter(r.ns, r.fd, r.f)
	for {
		n, readErr, writeErr, idle := w.drainOnce(r.rc)
		if !idle {
			r.endNS(readErr, writeErr)
			return
		}
		if n == 0 {
			r.state.Store(drainIdle)
			// A kick between the last read and the store found a
			// drainer running and did nothing: look again.
			if !readable(r.ns) || !r.state.CompareAndSwap(drainIdle, drainRunning) {
				return
			}
			continue
		}
		if r.wakeCh == nil {
			r.wakeCh = make(chan struct{}, 1)
		}
		r.state.Store(drainParked)
		if readable(r.ns) && r.state.CompareAndSwap(drainParked, drainRunning) {
			continue
		}
		// Not readable, or a kick took the drainer over and sends on
		// wakeCh.
		if timer == nil {
			timer = time.NewTimer(nsIdleHandoff)
		} else {
			timer.Reset(nsIdleHandoff)
		}
		select {
		case <-r.wakeCh:
		case <-timer.C:
			if r.state.CompareAndSwap(drainParked, drainIdle) {
				return
			}
			<-r.wakeCh // a kick came at the same time
		}
	}
}

// kick runs when the namespace socket may have data. It must not block:
// it runs while the stack delivers the event.
func (r *spliceState) kick() {
	if !r.armed.Load() || r.ended.Load() {
		return
	}
	for {
		switch r.state.Load() {
		case drainRunning:
			return
		case drainParked:
			if r.state.CompareAndSwap(drainParked, drainRunning) {
				r.wakeCh <- struct{}{}
				return
			}
		case drainIdle:
			if !r.state.CompareAndSwap(drainIdle, drainRunning) {
				continue
			}
			if !r.start(r.drain) {
				// The gateway is closing and closes both sockets
				// itself. Nothing more happens here: kick runs inside
				// the stack's event delivery, where unregistering or
				// closing would wait on locks held by its caller.
				r.ended.Store(true)
				r.upDone()
			}
			return
		}
	}
}

// readable says whether the namespace socket has data, an end or an
// error to act on.
func readable(ns *sockets.Conn) bool {
	n, _ := sockets.Poll([]sockets.PollFD{{Socket: ns.Socket(), Events: sockets.POLLIN}}, 0)
	return n > 0
}

// hostWriter drains the namespace socket into the host socket for one
// run of drain. Its callback is made once per run: a closure per call
// was an allocation per request.
type hostWriter struct {
	ns    *sockets.Conn
	dst   io.Writer // the host socket, as an fdWriter
	f     *flow
	moved int64
	err   error
	fn    func(uintptr) bool
}

func newHostWriter(ns *sockets.Conn, fd int, f *flow) *hostWriter {
	w := &hostWriter{ns: ns, dst: fdWriter(fd), f: f}
	w.fn = w.write
	return w
}

// write is RawConn.Write's callback: false asks to wait for room.
func (w *hostWriter) write(uintptr) bool {
	n, err := w.ns.DrainTo(w.dst, sockets.MSG_DONTWAIT)
	w.moved += n
	w.err = err
	w.f.moved(true, int(n))
	return err != errHostFull
}

// drainOnce moves what the namespace socket holds into the host socket
// (moved bytes), straight from the stack's buffers, waiting only for
// room on the host.
// idle means the namespace socket is empty for now; otherwise its stream
// ended (readErr nil) or an error ended it.
func (w *hostWriter) drainOnce(rc syscall.RawConn) (moved int64, readErr, writeErr error, idle bool) {
	w.moved, w.err = 0, nil
	// RawConn.Write waits for room in the send buffer each time the
	// callback returns false (the host socket is full).
	if perr := rc.Write(w.fn); perr != nil {
		return w.moved, nil, perr, false
	}
	err := w.err
	if errors.Is(err, syscall.EAGAIN) {
		return w.moved, nil, nil, true
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return w.moved, nil, err, false
	}
	return w.moved, err, nil, false
}

// The states of a relayed connection's namespace → host drainer.
const (
	drainIdle    int32 = iota // no goroutine: a kick starts one
	drainRunning              // a goroutine drains, and looks again before it stops
	drainParked               // the goroutine waits for a kick on its channel
)

// nsIdleHandoff is how long the namespace → host drainer of a relayed
// connection that moved data waits for more before its goroutine ends.
const nsIdleHandoff = time.Second

// errHostFull says the host socket's send buffer is full.
var errHostFull = errors.New("host socket send buffer full")

// fdWriter writes to a non-blocking host socket; what does not fit is
// left with errHostFull.
type fdWriter uintptr

func (fd fdWriter) Write(b []byte) (int, error) {
	n, err := nbio.Write(int(fd), b)
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

// hostIdleHandoff is how long the host → namespace direction of a
// relayed connection waits for the host socket on its own goroutine
// before it hands the wait to the gateway's hostWaiter and ends: long
// enough that a request/response exchange never pays the hand-over,
// short enough that idle connections hold no goroutine.
const hostIdleHandoff = time.Second

// hostReader reads the host socket for one run of copyDown. Its
// callbacks are made once per run: a closure per call was an allocation
// per answer.
type hostReader struct {
	rd     nbio.Reader
	bp     *[]byte // taken while data keeps coming
	n      int
	err    error
	waited bool
	readFn func(uintptr) bool
	waitFn func(uintptr) bool
}

func newHostReader() *hostReader {
	h := &hostReader{}
	h.readFn = h.read
	h.waitFn = h.wait
	return h
}

func (h *hostReader) read(fd uintptr) bool {
	if h.bp == nil {
		h.bp = spliceBufs.Get().(*[]byte)
	}
	h.n, h.err = h.rd.Read(int(fd), *h.bp)
	// RawConn.Read never waits here (the waiting is copyDown's, in
	// waitReadable or on hostWaiter): it only keeps the fd open meanwhile.
	return true
}

func (h *hostReader) wait(uintptr) bool {
	if !h.waited {
		h.waited = true
		return false // wait once in the poller
	}
	return true
}

// waitReadable waits for the host socket to be readable (more) until
// its read deadline, and reports any other error.
func (h *hostReader) waitReadable(rc syscall.RawConn) (more bool, err error) {
	h.waited = false
	err = rc.Read(h.waitFn)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return false, nil
	}
	return false, err
}

// toNS copies the host socket's stream into the namespace's until
// the host socket has nothing more to read for now (idle) or its stream
// ends (readErr io.EOF) or fails. It holds a buffer only while data
// keeps coming.
func (h *hostReader) toNS(rc syscall.RawConn, ns *sockets.Conn, f *flow) (readErr, writeErr error, idle bool) {
	defer func() {
		if h.bp != nil {
			spliceBufs.Put(h.bp)
			h.bp = nil
		}
	}()
	for {
		if perr := rc.Read(h.readFn); perr != nil {
			if errors.Is(perr, os.ErrDeadlineExceeded) {
				// The idle deadline of copyDown passed while data kept
				// coming: nothing was read; wait (at once) the other way.
				return nil, nil, true
			}
			return perr, nil, false
		}
		n, err := h.n, h.err
		switch {
		case err == unix.EAGAIN:
			return nil, nil, true
		case err != nil:
			return os.NewSyscallError("read", err), nil, false
		case n == 0:
			return io.EOF, nil, false
		}
		if _, werr := ns.Write((*h.bp)[:n]); werr != nil {
			return nil, werr, false
		}
		f.moved(false, n)
	}
}
