package relay

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// hostWaiter waits for host sockets to have something to read, all on
// one epoll instance and one goroutine, so that a relayed connection
// whose host side is quiet holds no goroutine (and no stack) for its
// host → namespace direction.
//
// A wait is one-shot: its function runs once, when the socket is
// readable, hung up or in error, when the wait is cancelled, or when the
// waiter closes. It runs on the waiter's goroutine and must not block.
type hostWaiter struct {
	// ep is the epoll instance, itself waited on in Go's poller (an
	// epoll fd is readable while it has events): the waiting parks a
	// goroutine, not a thread.
	ep   *os.File
	rc   syscall.RawConn
	done chan struct{}

	mu sync.Mutex
	// waits are the armed waits by id; protected by mu.
	waits  map[uint64]hostWait
	next   uint64 // protected by mu
	closed bool   // protected by mu
}

type hostWait struct {
	fd int
	f  func()
}

// newHostWaiter starts a waiter; Close stops it.
func newHostWaiter() (*hostWaiter, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("gateway: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("gateway: epoll fd: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), "epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return nil, fmt.Errorf("gateway: epoll fd: %w", err)
	}
	w := &hostWaiter{ep: ep, rc: rc, done: make(chan struct{}), waits: map[uint64]hostWait{}}
	go w.run()
	return w, nil
}

// errWaiterClosed says the waiter has stopped.
var errWaiterClosed = errors.New("gateway: host waiter closed")

// wait arms a one-shot wait for fd and returns the function that
// cancels it (running f at once if it had not run yet).
func (w *hostWaiter) wait(fd int, f func()) (cancel func(), err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, errWaiterClosed
	}
	w.next++
	id := w.next
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setEventID(&ev, id)
	var err2 error
	if err := w.rc.Control(func(epfd uintptr) {
		err2 = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_ADD, fd, &ev)
	}); err != nil {
		return nil, fmt.Errorf("gateway: epoll: %w", err)
	}
	if err2 != nil {
		return nil, fmt.Errorf("gateway: epoll_ctl add %d: %w", fd, err2)
	}
	w.waits[id] = hostWait{fd: fd, f: f}
	return func() { w.fire(id) }, nil
}

// fire runs wait id's function unless it has run.
func (w *hostWaiter) fire(id uint64) {
	w.mu.Lock()
	hw, ok := w.waits[id]
	if ok {
		delete(w.waits, id)
		// The socket may be closed already (which took it out of the
		// epoll set): EBADF or ENOENT are fine, and so is a closed
		// waiter.
		_ = w.rc.Control(func(epfd uintptr) {
			_ = unix.EpollCtl(int(epfd), unix.EPOLL_CTL_DEL, hw.fd, nil)
		})
	}
	w.mu.Unlock()
	if ok {
		hw.f()
	}
}

// pending is the number of armed waits.
func (w *hostWaiter) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.waits)
}

// run is the waiter's goroutine.
func (w *hostWaiter) run() {
	defer close(w.done)
	evs := make([]unix.EpollEvent, 128)
	for {
		var n int
		// Read calls the function again once the epoll fd is readable
		// each time it returns false.
		if err := w.rc.Read(func(epfd uintptr) bool {
			m, err := unix.EpollWait(int(epfd), evs, 0)
			n = max(m, 0)
			return n > 0 || (err != nil && err != unix.EINTR)
		}); err != nil {
			return // closed
		}
		for _, ev := range evs[:n] {
			w.fire(eventID(&ev))
		}
	}
}

// Close stops the waiter; the waits still armed run (their sockets are
// being closed with the gateway). It is idempotent.
func (w *hostWaiter) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	w.ep.Close() // ends run's Read
	<-w.done
	w.mu.Lock()
	var left []func()
	for id, hw := range w.waits {
		delete(w.waits, id)
		left = append(left, hw.f)
	}
	w.mu.Unlock()
	for _, f := range left {
		f()
	}
}

// setEventID and eventID keep a 64-bit id in an epoll event's data.
func setEventID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

func eventID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
