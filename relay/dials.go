package relay

import (
	"context"
	"net/netip"
	"sync"
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
	total   int                        // dials admitted and not ended; protected by mu
	byDest  map[netip.Addr][]*dialSlot // oldest first; protected by mu
	evicted uint64                     // protected by mu
	good    map[netip.Addr]time.Time   // when a dial there last succeeded; protected by mu
}

// goodFor is how long an address that answered counts as good; maxGood
// bounds how many are remembered.
const (
	goodFor = 5 * time.Minute
	maxGood = 4096
)

// dialSlot is one admitted dial.
type dialSlot struct {
	dst     netip.Addr
	ctx     context.Context
	cancel  context.CancelFunc
	started time.Time
	evicted bool // protected by dialer.mu
}

func newDialer(max, perDest int) *dialer {
	return &dialer{max: max, perDest: perDest, byDest: map[netip.Addr][]*dialSlot{}, good: map[netip.Addr]time.Time{}}
}

// start admits a dial to dst under parent, or returns nil (drop the SYN).
func (d *dialer) start(parent context.Context, dst netip.Addr) *dialSlot {
	d.mu.Lock()
	defer d.mu.Unlock()
	mine := len(d.byDest[dst])
	if mine >= d.perDest {
		return nil
	}
	now := time.Now()
	if d.total >= d.max {
		victim := d.victim(dst, mine, now)
		if victim == nil {
			return nil
		}
		victim.evicted = true
		victim.cancel()
		d.evicted++
	}
	ctx, cancel := context.WithCancel(parent)
	s := &dialSlot{dst: dst, ctx: ctx, cancel: cancel, started: now}
	d.byDest[dst] = append(d.byDest[dst], s)
	d.total++
	return s
}

// victim picks the dial a new dial to dst (which has mine in progress)
// may take the slot of, or nil.
func (d *dialer) victim(dst netip.Addr, mine int, now time.Time) *dialSlot {
	oldestLive := func(ss []*dialSlot) *dialSlot {
		for _, s := range ss {
			if !s.evicted {
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
		for a, ss := range d.byDest {
			if isGood(a) {
				continue
			}
			if s := oldestLive(ss); s != nil && (pick == nil || s.started.Before(pick.started)) {
				pick = s
			}
		}
		if pick != nil {
			return pick
		}
	}
	var busiest []*dialSlot
	most := mine + 1
	for a, ss := range d.byDest {
		if !dstGood && isGood(a) {
			continue // an address that answers keeps its dials
		}
		if n := d.live(ss); n > most {
			busiest, most = ss, n
		}
	}
	return oldestLive(busiest)
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

// end releases s, remembers its address as good if the dial succeeded,
// and reports whether it was evicted.
func (d *dialer) end(s *dialSlot, succeeded bool) bool {
	s.cancel()
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
