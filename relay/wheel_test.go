package relay

import "testing"

// TestWheelFiresEachEntryAtItsOwnTick: an entry beyond the wheel's span
// (an RTO backed off past a second, a connect timeout) fires at its own
// tick, with that tick, not when the last slot first comes round; one
// filed in the past fires at the next advance with the tick it was
// filed under. The engine matches the tick it noted (tcpFlow.queued)
// with the one fire names: a mismatch once lost every timer beyond the
// span, and flows with a lost retransmission stalled for ever.
func TestWheelFiresEachEntryAtItsOwnTick(t *testing.T) {
	var w wheel
	keep := func(wheelEntry) bool { return true }
	w.advance(100, func(wheelEntry, int64) { t.Fatal("an empty wheel fired") }, keep)
	type fired struct {
		idx        uint32
		tick, when int64
	}
	var got []fired
	for _, at := range []int64{101, 100 + wheelSlots - 1, 100 + wheelSlots + 500, 5000, 70000} {
		w.add(at, uint32(at), 1)
	}
	w.add(50, 50, 1) // in the past
	for now := int64(100); now <= 80000; now += 7 {
		w.advance(now, func(e wheelEntry, tick int64) { got = append(got, fired{e.idx, tick, now}) }, keep)
	}
	if len(got) != 6 {
		t.Fatalf("fired %+v, want six entries once each", got)
	}
	for _, f := range got {
		late := f.when - f.tick
		if int64(f.idx) != f.tick || late < 0 || late > 7 && f.idx != 50 {
			t.Errorf("entry %d fired with tick %d at %d, want its own tick, within a step", f.idx, f.tick, f.when)
		}
	}
	if w.count != 0 || w.next() != -1 {
		t.Fatalf("%d entries left, next %d", w.count, w.next())
	}
}

// TestWheelDropsFarEntriesNoLongerWanted: an entry beyond the span that
// keep no longer wants (its timer stopped) is not filed again, so the
// wheel empties and its next tick is none; one still wanted fires at its
// own tick.
func TestWheelDropsFarEntriesNoLongerWanted(t *testing.T) {
	var w wheel
	w.add(30000, 1, 1) // a connect timeout, stopped once the dial ended
	w.add(5000, 2, 1)  // a timer still running
	asked := 0
	keep := func(e wheelEntry) bool { asked++; return e.idx == 2 }
	var fired []uint32
	for now := int64(0); now <= 40000; now += 10 {
		w.advance(now, func(e wheelEntry, tick int64) { fired = append(fired, e.idx) }, keep)
		if now == 2*wheelSlots && w.count != 1 {
			t.Fatalf("%d entries after two turns, want only the one still wanted", w.count)
		}
	}
	if len(fired) != 1 || fired[0] != 2 {
		t.Fatalf("fired %v, want entry 2 once", fired)
	}
	if w.count != 0 || w.next() != -1 {
		t.Fatalf("%d entries left, next %d", w.count, w.next())
	}
	if asked > 10 {
		t.Fatalf("keep asked %d times: the stopped entry went round the wheel", asked)
	}
}
