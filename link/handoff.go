package link

import (
	"encoding/binary"
	"os"
	"sync"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// maxHandoff is how many bytes of frames a handoff queues for its
// goroutine; a poll loop that finds it full delivers the queue itself.
var maxHandoff = 4 << 20

// A handoff takes the frames a poll loop (Reads) read for the stack to a
// goroutine of its own, which delivers them in their order.
//
// A poll loop that delivered them itself ran the stack on its own
// thread: its processor (the engine's, which it holds while it waits)
// then had the goroutines the stack made ready, which another thread
// had to steal, or the loop had to yield to; a request to the stack's
// own services cost twice the CPU of a reader goroutine's (measured:
// the performance log). The handoff's goroutine waits in Go's poller on
// an eventfd, as a reader goroutine waits on the TAP: woken by the
// loop's write, it runs the stack, and what the stack makes ready, on
// a processor of the stack's.
type handoff struct {
	mu      sync.Mutex
	pkts    []*stack.PacketBuffer // queued, in order
	spare   []*stack.PacketBuffer // the other slice, under deliverMu
	bytes   int
	stopped bool // the goroutine ends: push delivers, wake must not write to efd
	kick    bool // a frame went into the empty queue since the last wake

	deliverMu sync.Mutex // held while frames are delivered: one at a time, in order
	efd       int
	file      *os.File // efd, in Go's poller
	done      chan struct{}
}

// newHandoff starts a handoff's goroutine for e; stop ends it.
func newHandoff(e *rawEndpoint) (*handoff, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	h := &handoff{efd: fd, file: os.NewFile(uintptr(fd), "link-handoff"), done: make(chan struct{})}
	go h.run(e)
	return h, nil
}

// push queues pkt for the stack, or delivers it (and what is queued)
// when the queue is full or the goroutine gone. It takes the caller's
// reference.
func (h *handoff) push(e *rawEndpoint, pkt *stack.PacketBuffer) {
	size := pkt.Size()
	h.mu.Lock()
	if !h.stopped && h.bytes+size <= maxHandoff {
		if len(h.pkts) == 0 {
			h.kick = true
		}
		h.pkts = append(h.pkts, pkt)
		h.bytes += size
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	// Full (the stack is behind) or stopped: deliver here, after what
	// waits, in order.
	h.deliverMu.Lock()
	h.drain(e)
	e.deliver(pkt)
	h.deliverMu.Unlock()
}

// wake wakes the goroutine if frames were queued since the last wake;
// the poll loop calls it after each batch.
func (h *handoff) wake() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.kick && !h.stopped {
		// eventfd counts: a write fails only when the count would
		// overflow, and then the goroutine has a wake-up pending.
		// Under mu: stop closes efd, whose number another file may
		// take, only once stopped is set.
		_, _ = unix.Write(h.efd, eventOne[:])
	}
	h.kick = false
}

// eventOne is the 8 bytes that add 1 to an eventfd's count.
var eventOne = func() (b [8]byte) {
	binary.NativeEndian.PutUint64(b[:], 1)
	return
}()

// drain delivers what is queued; the caller holds deliverMu, which
// spare is under.
func (h *handoff) drain(e *rawEndpoint) {
	for {
		h.mu.Lock()
		q := h.pkts
		h.pkts = h.spare[:0]
		h.bytes = 0
		h.mu.Unlock()
		if len(q) == 0 {
			h.spare = q
			return
		}
		for i, pkt := range q {
			e.deliver(pkt)
			q[i] = nil
		}
		h.spare = q[:0]
	}
}

// run is the goroutine: it waits for the loop's wake-ups and delivers.
func (h *handoff) run(e *rawEndpoint) {
	defer close(h.done)
	var b [8]byte
	for {
		_, err := h.file.Read(b[:])
		h.deliverMu.Lock()
		if err != nil { // closed by stop: what is queued now is the last
			h.mu.Lock()
			h.stopped = true
			h.mu.Unlock()
		}
		h.drain(e)
		h.deliverMu.Unlock()
		if err != nil {
			return
		}
	}
}

// stop ends the goroutine once it delivered what is queued; frames
// pushed later are delivered by push.
func (h *handoff) stop() {
	h.mu.Lock()
	h.stopped = true
	h.mu.Unlock()
	h.file.Close()
	<-h.done
}
