package sockets

import (
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/waiter"
)

// Poll events, as poll(2) names them.
const (
	POLLIN   = int16(waiter.EventIn)
	POLLPRI  = int16(waiter.EventPri)
	POLLOUT  = int16(waiter.EventOut)
	POLLERR  = int16(waiter.EventErr)
	POLLHUP  = int16(waiter.EventHUp)
	POLLNVAL = 0x20
)

// PollFD is one entry of Poll: the socket, the events of interest and,
// after Poll, the events that happened. POLLERR and POLLHUP are reported
// whether asked for or not; POLLNVAL marks a closed socket.
type PollFD struct {
	Socket  *Socket
	Events  int16
	Revents int16
}

// Poll waits until one of the sockets is ready, like Python's
// select.poll().poll(timeout) over socket objects. It returns how many
// entries have non-zero Revents. A negative timeout waits for ever; zero
// only checks. Poll never fails with a timeout: it returns 0.
func Poll(fds []PollFD, timeout time.Duration) (int, error) {
	// A socket already ready, or a zero timeout, needs no registration:
	// such a Poll allocates nothing.
	if n := pollOnce(fds); n > 0 || timeout == 0 {
		return n, nil
	}
	// Register, then look again, so no event falls between.
	notify := make(chan struct{}, 1)
	entries := make([]waiter.Entry, len(fds))
	for i := range fds {
		if fds[i].Socket == nil {
			continue
		}
		mask := waiter.EventMask(fds[i].Events) | waiter.EventErr | waiter.EventHUp
		entries[i] = waiter.NewFunctionEntry(mask, func(waiter.EventMask) {
			select {
			case notify <- struct{}{}:
			default:
			}
		})
		fds[i].Socket.wq.EventRegister(&entries[i])
	}
	defer func() {
		for i := range fds {
			if fds[i].Socket != nil {
				fds[i].Socket.wq.EventUnregister(&entries[i])
			}
		}
	}()
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	for {
		if n := pollOnce(fds); n > 0 {
			return n, nil
		}
		select {
		case <-notify:
		case <-timer:
			return 0, nil
		}
	}
}

// pollOnce sets the Revents of fds from their sockets' state now and
// returns how many are non-zero.
func pollOnce(fds []PollFD) int {
	n := 0
	for i := range fds {
		fds[i].Revents = fds[i].Socket.revents(fds[i].Events)
		if fds[i].Revents != 0 {
			n++
		}
	}
	return n
}

// revents computes the events of a socket now.
func (s *Socket) revents(events int16) int16 {
	if s == nil || s.isClosed() {
		return POLLNVAL
	}
	mask := waiter.EventMask(events) | waiter.EventErr | waiter.EventHUp
	return int16(s.ep.Readiness(mask))
}

// Notify calls f whenever one of events (POLLIN, POLLOUT; POLLERR and
// POLLHUP always) may have happened on the socket, until stop is called:
// the callback form of Poll, for event loops that keep no goroutine per
// idle socket. f runs on the stack's goroutine that made the event, so
// it must not block; it may run again before an earlier call returns.
// Events can be spurious: check with Poll (timeout 0) or a non-blocking
// call. Closing the socket calls f once more.
func (s *Socket) Notify(events int16, f func()) (stop func()) {
	mask := waiter.EventMask(events) | waiter.EventErr | waiter.EventHUp
	e := waiter.NewFunctionEntry(mask, func(waiter.EventMask) { f() })
	s.wq.EventRegister(&e)
	var once sync.Once
	return func() { once.Do(func() { s.wq.EventUnregister(&e) }) }
}
