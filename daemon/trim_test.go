package daemon

import (
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

var sink [][]byte

// TestTrimmerCollectsWhenQuiet makes 4 MiB of garbage, goes quiet and
// expects the trimmer to force a collection within a few periods.
func TestTrimmerCollectsWhenQuiet(t *testing.T) {
	// Start from a heap with nothing free to reuse, and let no
	// collection of the runtime's own free the garbage (and the
	// scavenger return it) before the trimmer looks.
	debug.FreeOSMemory()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	tr := startTrimmer(20*time.Millisecond, 1<<20, nil)
	defer tr.Stop()
	for i := 0; i < 64; i++ {
		sink = append(sink, make([]byte, 64<<10))
	}
	sink = nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		metrics.Read(s)
		if s[0].Value.Uint64() > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no forced collection after 4 MiB of garbage and a quiet period")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTrimmerLeavesAQuietHeapAlone: under the threshold, no forced
// collection.
func TestTrimmerLeavesAQuietHeapAlone(t *testing.T) {
	s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
	tr := startTrimmer(10*time.Millisecond, 64<<20, nil)
	metrics.Read(s)
	before := s[0].Value.Uint64()
	time.Sleep(200 * time.Millisecond)
	tr.Stop()
	metrics.Read(s)
	if got := s[0].Value.Uint64(); got != before {
		t.Fatalf("%d forced collections with the heap under the threshold", got-before)
	}
}

// TestTrimmerWaitsForTrafficToStop: garbage over the threshold, but
// frames keep coming (a bulk transfer on pooled buffers): no forced
// collection until they stop.
func TestTrimmerWaitsForTrafficToStop(t *testing.T) {
	debug.FreeOSMemory()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	var frames, flowing atomic.Uint64
	flowing.Store(1)
	tr := startTrimmer(20*time.Millisecond, 1<<20, func() uint64 {
		// Each look sees 1000 frames more while traffic flows.
		return frames.Add(1000 * flowing.Load())
	})
	defer tr.Stop()
	for i := 0; i < 64; i++ {
		sink = append(sink, make([]byte, 64<<10))
	}
	sink = nil
	time.Sleep(300 * time.Millisecond)
	metrics.Read(s)
	if got := s[0].Value.Uint64(); got != before {
		t.Fatalf("%d forced collections while frames flowed", got-before)
	}
	flowing.Store(0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		metrics.Read(s)
		if s[0].Value.Uint64() > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no forced collection once the frames stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
