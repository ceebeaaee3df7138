package relay

import "math/bits"

// A wheel holds the flow engine's timers: one deadline per flow, kept in
// the slot of its tick (wheelTick) rather than as a timer of its own, so
// that 10 000 flows cost 10 000 slot entries, not 10 000 timers. A
// deadline further than the wheel's span waits in the last slot and is
// placed again when that slot comes round: an entry fires with the tick
// it was filed under, never earlier (the engine matches that tick with
// the one it noted, tcpFlow.queued). Entries are never removed: a flow
// whose deadline moved is skipped when the old slot fires (its deadline
// no longer matches), so arming a timer costs one append.
type wheel struct {
	slots [wheelSlots][]wheelEntry
	used  [wheelSlots / 64]uint64 // bit i: slots[i] is not empty
	now   int64                   // the current tick: slots before it have fired
	count int                     // entries in the wheel
	ready bool                    // the slots have their first room
}

// A wheelEntry names a flow by index and generation, and the tick it was
// filed under.
type wheelEntry struct {
	idx, gen uint32
	at       int64
}

const (
	wheelSlots = 1024 // a power of two
	// wheelTick is the wheel's resolution, in nanoseconds.
	wheelTick = int64(1_000_000)
	// wheelSlotRoom is the room each slot starts with.
	wheelSlotRoom = 4
)

// add files flow idx (generation gen) under tick at. A tick before w.now
// fires at the next advance (with at); one beyond the wheel's span waits
// in its last slot and is filed again from there.
func (w *wheel) add(at int64, idx, gen uint32) {
	if !w.ready {
		// Every slot starts with room of its own in one array, so that
		// a slot used for the first time allocates nothing.
		backing := make([]wheelEntry, wheelSlots*wheelSlotRoom)
		for i := range w.slots {
			w.slots[i] = backing[i*wheelSlotRoom : i*wheelSlotRoom : (i+1)*wheelSlotRoom]
		}
		w.ready = true
	}
	slot := min(max(at, w.now), w.now+wheelSlots-1)
	i := slot & (wheelSlots - 1)
	w.slots[i] = append(w.slots[i], wheelEntry{idx, gen, at})
	w.used[i/64] |= 1 << (i % 64)
	w.count++
}

// next is the first tick at or after w.now whose slot holds entries, or
// -1 if the wheel is empty.
func (w *wheel) next() int64 {
	if w.count == 0 {
		return -1
	}
	const words = wheelSlots / 64
	start := w.now & (wheelSlots - 1)
	for k := int64(0); k <= words; k++ {
		word := (start/64 + k) % words
		m := w.used[word]
		switch k {
		case 0:
			m &^= (1 << (start % 64)) - 1 // this turn: from start on
		case words:
			m &= (1 << (start % 64)) - 1 // the next turn: before start
		}
		if m != 0 {
			slot := word*64 + int64(bits.TrailingZeros64(m))
			return w.now + ((slot - start) & (wheelSlots - 1))
		}
	}
	return -1
}

// advance moves the wheel to tick now, calling fire for every entry of
// the slots passed whose tick has come, with that tick (fire may add
// entries); an entry filed beyond the span is filed again if keep says
// it is still wanted (a timer that was stopped or moved earlier is not:
// it would wake the loop once per turn until its tick). It visits at
// most one turn.
func (w *wheel) advance(now int64, fire func(e wheelEntry, tick int64), keep func(e wheelEntry) bool) {
	for w.count > 0 && w.now <= now {
		t := w.next()
		if t < 0 || t > now {
			break
		}
		i := t & (wheelSlots - 1)
		es := w.slots[i]
		w.slots[i] = nil
		w.used[i/64] &^= 1 << (i % 64)
		w.count -= len(es)
		w.now = t + 1
		for _, e := range es {
			if e.at > t { // beyond the span when filed
				if keep(e) {
					w.add(e.at, e.idx, e.gen)
				}
				continue
			}
			fire(e, e.at)
		}
		if cap(es) <= 64 && w.slots[i] == nil {
			w.slots[i] = es[:0] // keep a small slot's array
		}
	}
	if now >= w.now {
		w.now = now + 1
	}
}
