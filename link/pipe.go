package link

import (
	"sync"
	"sync/atomic"
)

// PipeQueueLen is how many frames an in-memory cable holds in each
// direction before it drops, as a full NIC ring would.
const PipeQueueLen = 4096

// Pipe returns the two ends of an in-memory Ethernet cable: a frame written
// to one end is read from the other. It joins two stacks in one process
// without root. Closing one end makes its reads and writes fail; frames
// written towards a closed end are dropped, as on an unplugged cable.
func Pipe() (Device, Device) {
	a := &pipeEnd{q: make(chan *[]byte, PipeQueueLen), closed: make(chan struct{})}
	b := &pipeEnd{q: make(chan *[]byte, PipeQueueLen), closed: make(chan struct{})}
	a.peer, b.peer = b, a
	return a, b
}

// pipeEnd is one end of a Pipe. It reads from its own queue and writes to
// its peer's.
type pipeEnd struct {
	q       chan *[]byte
	peer    *pipeEnd
	closed  chan struct{}
	once    sync.Once
	dropped atomic.Uint64
}

// ReadFrame implements Device.
func (p *pipeEnd) ReadFrame(b []byte) (int, error) {
	select {
	case <-p.closed:
		return 0, errClosed
	default:
	}
	select {
	case f := <-p.q:
		n := copy(b, *f)
		pipeFrames.Put(f)
		return n, nil
	case <-p.closed:
		return 0, errClosed
	}
}

// WriteFrame implements Device. It never blocks: a full queue drops.
func (p *pipeEnd) WriteFrame(bufs [][]byte) error {
	select {
	case <-p.closed:
		return errClosed
	default:
	}
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	f := pipeFrames.Get().(*[]byte)
	if cap(*f) < n {
		*f = make([]byte, 0, n)
	}
	*f = (*f)[:0]
	for _, b := range bufs {
		*f = append(*f, b...)
	}
	select {
	case <-p.peer.closed:
		p.dropped.Add(1)
		pipeFrames.Put(f)
	case p.peer.q <- f:
	default:
		p.dropped.Add(1)
		pipeFrames.Put(f)
	}
	return nil
}

// pipeFrames holds the frames in flight on every Pipe, reused.
var pipeFrames = sync.Pool{New: func() any {
	b := make([]byte, 0, 2048)
	return &b
}}

// Close implements Device.
func (p *pipeEnd) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}
