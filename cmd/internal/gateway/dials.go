package gateway

import (
	"context"
	"net/netip"
	"sync"
)

// dialer admits host dials: at most max in progress, at most perDest to
// one address. When every slot is taken, a dial to an address with fewer
// dials in progress than the busiest one takes a slot from it: the
// busiest address's oldest dial is cancelled (its SYN dropped; the
// namespace retries). So black holes, whose dials hold their slots until
// the connect timeout, share the slots with each other and can never
// keep a good destination out.
type dialer struct {
	max, perDest int

	mu      sync.Mutex
	total   int                        // dials admitted and not ended; protected by mu
	byDest  map[netip.Addr][]*dialSlot // oldest first; protected by mu
	evicted uint64                     // protected by mu
}

// dialSlot is one admitted dial.
type dialSlot struct {
	dst     netip.Addr
	ctx     context.Context
	cancel  context.CancelFunc
	evicted bool // protected by dialer.mu
}

func newDialer(max, perDest int) *dialer {
	return &dialer{max: max, perDest: perDest, byDest: map[netip.Addr][]*dialSlot{}}
}

// start admits a dial to dst under parent, or returns nil (drop the SYN).
func (d *dialer) start(parent context.Context, dst netip.Addr) *dialSlot {
	d.mu.Lock()
	defer d.mu.Unlock()
	mine := len(d.byDest[dst])
	if mine >= d.perDest {
		return nil
	}
	if d.total >= d.max {
		// Take a slot from the address with the most dials, if it
		// has more than dst would have.
		var victim netip.Addr
		most := mine + 1
		for a, ss := range d.byDest {
			if n := d.live(ss); n > most {
				victim, most = a, n
			}
		}
		if !victim.IsValid() {
			return nil
		}
		for _, s := range d.byDest[victim] {
			if !s.evicted {
				s.evicted = true
				s.cancel()
				d.evicted++
				break
			}
		}
	}
	ctx, cancel := context.WithCancel(parent)
	s := &dialSlot{dst: dst, ctx: ctx, cancel: cancel}
	d.byDest[dst] = append(d.byDest[dst], s)
	d.total++
	return s
}

// live counts the slots of one address not yet evicted.
func (d *dialer) live(ss []*dialSlot) int {
	n := 0
	for _, s := range ss {
		if !s.evicted {
			n++
		}
	}
	return n
}

// end releases s and reports whether it was evicted.
func (d *dialer) end(s *dialSlot) bool {
	s.cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	ss := d.byDest[s.dst]
	for i, x := range ss {
		if x == s {
			ss = append(ss[:i], ss[i+1:]...)
			break
		}
	}
	if len(ss) == 0 {
		delete(d.byDest, s.dst)
	} else {
		d.byDest[s.dst] = ss
	}
	d.total--
	return s.evicted
}

// stats returns the dials in progress and how many were evicted so far.
func (d *dialer) stats() (pending int, evicted uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total, d.evicted
}
