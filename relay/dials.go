package relay

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// dialer admits host dials: at most max in progress, at most perDest to
// one address. When every slot is taken, a new dial takes one from a
// dial in progress, whose SYN is then dropped (the namespace retries):
//
//   - a dial to an address that answered recently takes the oldest dial
//     to an address that has not (black holes never answer: they can
//     never keep a good destination out, however many dials they hold);
//   - any other dial takes the busiest address's oldest dial, if that
//     address has more dials than the new one's would have and (unless
//     the new one answered too) has not answered: black holes share the
//     slots among themselves.
type dialer struct {
	max, perDest int

	mu      sync.Mutex
	total   int                      // dials admitted and not ended; protected by mu
	byDest  map[netip.Addr]destDials // protected by mu
	evicted uint64                   // protected by mu
	good    map[netip.Addr]time.Time // when a dial there last succeeded; protected by mu
	free    *dialSlot                // ended slots without a context, for reuse; protected by mu
}

// destDials are the dials to one address, oldest first (a list through
// dialSlot.next: admitting and ending a dial allocates nothing).
type destDials struct {
	first, last *dialSlot
	n           int
}

// goodFor is how long an address that answered counts as good; maxGood
// bounds how many are remembered.
const (
	goodFor = 5 * time.Minute
	maxGood = 4096
)

// dialSlot is one admitted dial.
type dialSlot struct {
	dst netip.Addr
	// ctx ends when the dial is evicted or the gateway closes; nil for
	// a dial started without one (the flow engine's: it asks
	// evicted).
	ctx     context.Context
	cancel  context.CancelFunc
	started time.Time
	evicted atomic.Bool
	next    *dialSlot // protected by dialer.mu
}

func newDialer(max, perDest int) *dialer {
	return &dialer{max: max, perDest: perDest, byDest: map[netip.Addr]destDials{}, good: map[netip.Addr]time.Time{}}
}

// start admits a dial to dst under parent, or returns nil (drop the
// SYN): the slot's context ends when the dial is evicted.
func (d *dialer) start(parent context.Context, dst netip.Addr) *dialSlot {
	return d.admit(dst, func(s *dialSlot) { s.ctx, s.cancel = context.WithCancel(parent) })
}

// startBare admits a dial to dst without a context, or returns nil: the
// flow engine asks evicted instead. Its slot may be one that ended
// before, so the caller must not touch a slot after end.
func (d *dialer) startBare(dst netip.Addr) *dialSlot { return d.admit(dst, nil) }

// admit admits a dial to dst; withCtx, if any, gives its slot a context.
func (d *dialer) admit(dst netip.Addr, withCtx func(*dialSlot)) *dialSlot {
	d.mu.Lock()
	defer d.mu.Unlock()
	mine := d.byDest[dst].n
	if mine >= d.perDest {
		return nil
	}
	now := time.Now()
	if d.total >= d.max {
		victim := d.victim(dst, mine, now)
		if victim == nil {
			return nil
		}
		victim.evicted.Store(true)
		if victim.cancel != nil {
			victim.cancel()
		}
		d.evicted++
	}
	var s *dialSlot
	if withCtx == nil && d.free != nil {
		s, d.free = d.free, d.free.next
		s.next = nil
		s.evicted.Store(false)
	} else {
		s = &dialSlot{}
	}
	s.dst, s.started = dst, now
	if withCtx != nil {
		withCtx(s)
	}
	dd := d.byDest[dst]
	if dd.last == nil {
		dd.first = s
	} else {
		dd.last.next = s
	}
	dd.last = s
	dd.n++
	d.byDest[dst] = dd
	d.total++
	return s
}

// victim picks the dial a new dial to dst (which has mine in progress)
// may take the slot of, or nil.
func (d *dialer) victim(dst netip.Addr, mine int, now time.Time) *dialSlot {
	oldestLive := func(dd destDials) *dialSlot {
		for s := dd.first; s != nil; s = s.next {
			if !s.evicted.Load() {
				return s
			}
		}
		return nil
	}
	isGood := func(a netip.Addr) bool {
		t, ok := d.good[a]
		return ok && now.Sub(t) < goodFor
	}
	dstGood := isGood(dst)
	if dstGood {
		var pick *dialSlot
		for a, dd := range d.byDest {
			if isGood(a) {
				continue
			}
			if s := oldestLive(dd); s != nil && (pick == nil || s.started.Before(pick.started)) {
				pick = s
			}
		}
		if pick != nil {
			return pick
		}
	}
	var busiest destDials
	most := mine + 1
	for a, dd := range d.byDest {
		if !dstGood && isGood(a) {
			continue // an address that answers keeps its dials
		}
		if n := d.live(dd); n > most {
			busiest, most = dd, n
		}
	}
	return oldestLive(busiest)
}

// live counts the slots of one address not yet evicted.
func (d *dialer) live(dd destDials) int {
	n := 0
	for s := dd.first; s != nil; s = s.next {
		if !s.evicted.Load() {
			n++
		}
	}
	return n
}

// end releases s, remembers its address as good if the dial succeeded,
// and reports whether it was evicted.
func (d *dialer) end(s *dialSlot, succeeded bool) bool {
	if s.cancel != nil {
		s.cancel()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if succeeded {
		if len(d.good) >= maxGood {
			now := time.Now()
			for a, t := range d.good {
				if now.Sub(t) >= goodFor || len(d.good) >= maxGood {
					delete(d.good, a)
				}
			}
		}
		d.good[s.dst] = time.Now()
	}
	dd := d.byDest[s.dst]
	var prev *dialSlot
	for x := dd.first; x != nil; prev, x = x, x.next {
		if x != s {
			continue
		}
		if prev == nil {
			dd.first = x.next
		} else {
			prev.next = x.next
		}
		if dd.last == x {
			dd.last = prev
		}
		dd.n--
		break
	}
	if dd.n == 0 {
		delete(d.byDest, s.dst)
	} else {
		d.byDest[s.dst] = dd
	}
	d.total--
	evicted := s.evicted.Load()
	if s.ctx == nil {
		s.next, d.free = d.free, s
	}
	return evicted
}

// each calls fn for every dial in progress.
func (d *dialer) each(fn func(s *dialSlot)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, dd := range d.byDest {
		for s := dd.first; s != nil; s = s.next {
			fn(s)
		}
	}
}

// stats returns the dials in progress and how many were evicted so far.
func (d *dialer) stats() (pending int, evicted uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total, d.evicted
}
