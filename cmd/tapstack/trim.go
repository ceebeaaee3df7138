package main

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
// moved a few GB would hold 20-30 MiB more than it needs meanwhile. Each
// period with no collection (the daemon is quiet) in which the heap has
// grown by more than threshold since the last trim, the trimmer
// collects twice and returns what is free.
type memoryTrimmer struct {
	stop chan struct{}
	done chan struct{}
}

// startTrimmer starts the trimmer's goroutine; Stop ends it.
func startTrimmer(period time.Duration, threshold uint64) *memoryTrimmer {
	t := &memoryTrimmer{stop: make(chan struct{}), done: make(chan struct{})}
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
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		cycles, heap := heapState(s)
		if cycles == lastCycles && heap > trimmed+threshold {
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

// Stop ends the trimmer and waits for its goroutine.
func (t *memoryTrimmer) Stop() {
	close(t.stop)
	<-t.done
}
