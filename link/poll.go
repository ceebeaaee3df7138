package link

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// A pollable Device can be read by a poll loop outside the endpoint.
// canPoll says whether it can be now. interrupt makes a pending
// ReadFrame return at once with an error, until resume. detach takes
// the device out of Go's poller and returns the descriptor for the
// loop to wait on (readable: a frame waits); readNow then reads one
// frame without waiting (unix.EAGAIN when there is none); attach puts
// the device back in Go's poller for ReadFrame (closing the descriptor
// detach returned).
type pollable interface {
	canPoll() bool
	interrupt()
	resume()
	detach() (int, error)
	readNow(b []byte) (int, error)
	attach() error
}

// ErrReleased is what Reads.Read returns once the reads went back to the
// endpoint's goroutines (Reads.Release, Endpoint.Unpoll, Close).
var ErrReleased = errors.New("link: reads released")

// Reads is the reading of an Endpoint's devices handed to a poll loop
// of the caller's (Endpoint.Poll): the loop waits for Fds to be
// readable (level-triggered) and calls Read. A frame read goes where a
// reader goroutine's would: the filter, the observers and the divert
// function on the loop's goroutine, then the stack, on a goroutine of
// the Reads' (see handoff).
type Reads struct {
	e       *rawEndpoint
	fds     []int
	devs    []pollable
	scratch []byte
	once    sync.Once
	unwatch func(fds []int) // protected by e.pollMu
	h       *handoff        // the frames for the stack
}

// Poll stops the endpoint's reader goroutines and hands the reading of
// its devices to the caller's poll loop, as long as every device can be
// polled (a TAP, an impairment wrapper that impairs no inbound frame
// just now); otherwise it returns an error and the goroutines go on.
// The endpoint must be attached. Reads.Release, Unpoll or Close give the
// reads back.
func (e *Endpoint) Poll() (*Reads, error) { return e.raw.poll() }

// Unpoll gives the reads back to reader goroutines, if a poll loop has
// them (Poll); that loop's next Read returns ErrReleased. It is safe to
// call at any time.
func (e *Endpoint) Unpoll() { e.raw.unpoll(nil) }

func (e *rawEndpoint) poll() (*Reads, error) {
	e.pollMu.Lock()
	defer e.pollMu.Unlock()
	e.mu.RLock()
	started, closed := e.started, e.closed
	e.mu.RUnlock()
	switch {
	case closed:
		return nil, errors.New("link: poll: the endpoint is closed")
	case !started:
		return nil, errors.New("link: poll: the endpoint is not attached")
	case e.polled.Load() != nil:
		return nil, errors.New("link: poll: the reads are polled already")
	}
	r := &Reads{e: e}
	for i, d := range e.devices {
		p, ok := d.(pollable)
		if !ok {
			return nil, fmt.Errorf("link: poll: queue %d (%T) cannot be polled", i, d)
		}
		if !p.canPoll() {
			return nil, fmt.Errorf("link: poll: queue %d cannot be polled now", i)
		}
		r.devs = append(r.devs, p)
	}
	h, err := newHandoff(e)
	if err != nil {
		return nil, fmt.Errorf("link: poll: %w", err)
	}
	r.h = h
	// Stop the readers: each sees polled set when its interrupted read
	// returns, and exits.
	e.polled.Store(r)
	for _, p := range r.devs {
		p.interrupt()
	}
	e.mu.RLock()
	set := e.readers
	e.mu.RUnlock()
	set.Wait()
	for _, p := range r.devs {
		p.resume()
	}
	for i, p := range r.devs {
		fd, err := p.detach()
		if err != nil {
			for _, p := range r.devs[:i] {
				_ = p.attach()
			}
			e.polled.Store(nil)
			h.stop()
			e.mu.Lock()
			if !e.closed {
				e.startReaders()
			}
			e.mu.Unlock()
			return nil, fmt.Errorf("link: poll: queue %d: %w", i, err)
		}
		r.fds = append(r.fds, fd)
	}
	return r, nil
}

// unpoll gives the reads back from r (nil: from whoever has them).
func (e *rawEndpoint) unpoll(r *Reads) {
	e.pollMu.Lock()
	defer e.pollMu.Unlock()
	cur := e.polled.Load()
	if cur == nil || r != nil && cur != r {
		return
	}
	e.polled.Store(nil)
	if cur.unwatch != nil {
		cur.unwatch(cur.fds) // before the descriptors close
	}
	for _, p := range cur.devs {
		if err := p.attach(); err != nil && e.logf != nil && !e.isClosed() {
			e.logf("link: unpoll: %v", err)
		}
	}
	cur.h.stop() // what the loop queued goes before what the readers read
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.startReaders()
}

// Fds are the descriptors to wait on, one per device: a readable one
// has frames for Read(i).
func (r *Reads) Fds() []int { return r.fds }

// Watch calls add with Fds, unless the reads went back already
// (ErrReleased), so that the loop waits on them; when they go back,
// remove is called with them, from any goroutine, before they are
// closed: the loop must stop waiting on them then (an epoll set must
// drop a descriptor before it closes, or it keeps reporting it).
func (r *Reads) Watch(add func(fds []int) error, remove func(fds []int)) error {
	r.e.pollMu.Lock()
	defer r.e.pollMu.Unlock()
	if r.e.polled.Load() != r {
		return ErrReleased
	}
	if err := add(r.fds); err != nil {
		return err
	}
	r.unwatch = remove
	return nil
}

// Read reads and hands on up to max frames of device i, without
// waiting (a loop that waits level-triggered comes back for the rest;
// one that reads one frame per wake-up saves the read that finds none).
// Frames for the stack go to the Reads' goroutine, which delivers them
// in order after Read returns. It returns how many it read, how many
// went to the stack, and ErrReleased once the reads
// went back to goroutines (the loop should stop waiting on Fds then):
// after Release, Unpoll or Close, when the device is gone (Failed), or
// after a read error, which the goroutines then log and retry with
// back-off. Calls must not overlap.
func (r *Reads) Read(i, max int) (read, stacked int, err error) {
	read, stacked, err = r.read(i, max)
	r.h.wake()
	return read, stacked, err
}

func (r *Reads) read(i, max int) (read, stacked int, err error) {
	e := r.e
	for read < max {
		if e.polled.Load() != r {
			return read, stacked, ErrReleased
		}
		size := e.frameSize()
		if len(r.scratch) != size {
			r.scratch = make([]byte, size)
		}
		m, err := r.devs[i].readNow(r.scratch)
		if err == unix.EAGAIN {
			return read, stacked, nil
		}
		if err == errImpairedIn { // the reader goroutines read through the impairment
			e.unpoll(r)
			return read, stacked, ErrReleased
		}
		if err != nil {
			if errors.Is(err, errClosed) || e.isClosed() {
				return read, stacked, ErrReleased
			}
			e.rxErrors.Add(1)
			if deviceGone(err) {
				e.fail(fmt.Errorf("link: queue %d: the device is gone: %w", i, err))
				return read, stacked, ErrReleased
			}
			// Anything else: the reader goroutines log it and back off.
			if e.logf != nil {
				e.logf("link: read from queue %d: %v (back to reader goroutines)", i, err)
			}
			e.unpoll(r)
			return read, stacked, ErrReleased
		}
		read++
		if e.handleFrame(r.scratch[:m], r.h) {
			stacked++
		}
	}
	return read, stacked, nil
}

// Release gives the reads back to reader goroutines (Unpoll).
func (r *Reads) Release() {
	r.once.Do(func() { r.e.unpoll(r) })
}

// canPoll implements pollable.
func (q *tapQueue) canPoll() bool { return true }

// detach implements pollable.
func (q *tapQueue) detach() (int, error) { return q.reopen(true) }

// attach implements pollable.
func (q *tapQueue) attach() error {
	_, err := q.reopen(false)
	return err
}

// readNow implements pollable. The descriptor is held while it reads,
// so that Close cannot hand its number to another file meanwhile.
func (q *tapQueue) readNow(b []byte) (int, error) {
	q.pbuf = b
	err := q.cur.Load().rc.Control(q.pollFn)
	q.pbuf = nil
	if err != nil {
		return 0, errClosed
	}
	return q.pn, q.perr
}

func (q *tapQueue) readPolled(fd uintptr) {
	q.pn, q.perr = q.prd.Read(int(fd), q.pbuf)
}

// interrupt implements pollable: a read deadline in the past.
func (q *tapQueue) interrupt() { _ = q.cur.Load().f.SetReadDeadline(time.Unix(1, 0)) }

// resume implements pollable.
func (q *tapQueue) resume() { _ = q.cur.Load().f.SetReadDeadline(time.Time{}) }

// canPoll implements pollable: while no inbound frame is impaired.
func (d *Impair) canPoll() bool {
	p, ok := d.dev.(pollable)
	return ok && p.canPoll() && d.in.spec.Load() == nil && !d.inBusy.Load()
}

// detach implements pollable.
func (d *Impair) detach() (int, error) { return d.dev.(pollable).detach() }

// attach implements pollable.
func (d *Impair) attach() error { return d.dev.(pollable).attach() }

// readNow implements pollable. A frame read once an inbound impairment
// came in goes to the in lane, for the reader goroutines that take over:
// the loop gets errImpairedIn, and Reads.Read gives them the reads.
func (d *Impair) readNow(b []byte) (int, error) {
	n, err := d.dev.(pollable).readNow(b)
	if err == nil && d.divertIn(b[:n]) {
		return 0, errImpairedIn
	}
	return n, err
}

// errImpairedIn is readNow's: the frame went to an inbound impairment
// set while a loop polled the device.
var errImpairedIn = errors.New("link: an inbound impairment came in")

// interrupt implements pollable.
func (d *Impair) interrupt() { d.dev.(pollable).interrupt() }

// resume implements pollable.
func (d *Impair) resume() { d.dev.(pollable).resume() }

// frameSize is the size of a read buffer.
func (e *rawEndpoint) frameSize() int {
	if e.vnet {
		return vnetHdrSize + header.EthernetMinimumSize + GSOMaxSize
	}
	return int(e.mtu.Load())
}
