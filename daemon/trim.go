package daemon

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// memoryTrimmer gives memory back to the system when traffic stops.
// Under load the stack keeps packet buffers in pools that only garbage
// collections empty (two: a pool's victims survive the first), and with
// little allocating no collection comes for two minutes: a daemon that
// moved a few GB would hold 20-30 MiB more than it needs meanwhile. After
// quietPeriods quiet periods in a row (no collection, and at most
// quietFrames frames counted by activity), if the heap has grown by more
// than threshold since the last trim, the trimmer collects twice and
// returns what is free. The frames keep it from trimming during a bulk
// transfer that allocates little (pooled buffers): that cost the relay
// up to a quarter of its throughput when the trimmer looked every second
// on collections alone.
type memoryTrimmer struct {
	stop     chan struct{}
	done     chan struct{}
	activity func() uint64 // frames moved so far; nil: not counted
}

// quietFrames is the most frames a period may see and still be quiet:
// idle connections' keep-alives and the odd DNS query.
const quietFrames = 50

// quietPeriods is how many quiet periods in a row come before a trim:
// three of the daemon's 500 ms, so that the relay's goroutines, which
// wait a second for more before they end, have ended and their stacks
// are returned with the rest.
const quietPeriods = 3

// startTrimmer starts the trimmer's goroutine; Stop ends it.
func startTrimmer(period time.Duration, threshold uint64, activity func() uint64) *memoryTrimmer {
	t := &memoryTrimmer{stop: make(chan struct{}), done: make(chan struct{}), activity: activity}
	s := make([]metrics.Sample, len(trimMetrics))
	for i, n := range trimMetrics {
		s[i].Name = n
	}
	// The first reading is taken here, so that growth from now on counts.
	cycles, heap := heapState(s)
	go t.run(period, threshold, s, cycles, heap)
	return t
}

var trimMetrics = []string{
	"/gc/cycles/total:gc-cycles",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
}

// heapState reads the number of collections so far and the heap memory
// not returned to the system.
func heapState(s []metrics.Sample) (cycles, heap uint64) {
	metrics.Read(s)
	for i, x := range s {
		if x.Value.Kind() != metrics.KindUint64 {
			continue
		}
		if i == 0 {
			cycles = x.Value.Uint64()
		} else {
			heap += x.Value.Uint64()
		}
	}
	return cycles, heap
}

func (t *memoryTrimmer) run(period time.Duration, threshold uint64, s []metrics.Sample, lastCycles, trimmed uint64) {
	defer close(t.done)
	tick := time.NewTicker(period)
	defer tick.Stop()
	lastFrames := t.frames()
	quiet := 0 // quiet periods in a row
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		cycles, heap := heapState(s)
		frames := t.frames()
		if cycles == lastCycles && frames-lastFrames <= quietFrames {
			quiet++
		} else {
			quiet = 0
		}
		lastFrames = frames
		if quiet >= quietPeriods && heap > trimmed+threshold {
			runtime.GC()
			debug.FreeOSMemory()
			cycles, heap = heapState(s)
			trimmed = heap
		} else if heap < trimmed {
			trimmed = heap
		}
		lastCycles = cycles
	}
}

func (t *memoryTrimmer) frames() uint64 {
	if t.activity == nil {
		return 0
	}
	return t.activity()
}

// Stop ends the trimmer and waits for its goroutine.
func (t *memoryTrimmer) Stop() {
	close(t.stop)
	<-t.done
}
