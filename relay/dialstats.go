package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// dialBuckets are the upper bounds, in seconds, of the dial latency
// histogram: from a host on the same machine (tens of µs) to a connect
// timeout.
var dialBucketsArr = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

var dialBuckets = dialBucketsArr[:]

// dialStats counts host TCP dials: how each ended, and how long the
// successful ones took.
type dialStats struct {
	started atomic.Uint64
	ok      atomic.Uint64
	buckets [len(dialBucketsArr)]atomic.Uint64 // by dialBuckets; beyond the last: only in count
	sumNs   atomic.Uint64

	mu     sync.Mutex
	failed map[string]uint64 // by errno name; protected by mu
}

// record counts one dial that took d and ended with err.
func (s *dialStats) record(d time.Duration, err error) {
	s.started.Add(1)
	if err != nil {
		s.mu.Lock()
		if s.failed == nil {
			s.failed = map[string]uint64{}
		}
		s.failed[dialErrName(err)]++
		s.mu.Unlock()
		return
	}
	s.ok.Add(1)
	s.sumNs.Add(uint64(d))
	sec := d.Seconds()
	for i, b := range dialBuckets {
		if sec <= b {
			s.buckets[i].Add(1)
			break
		}
	}
}

// dialErrName names a dial's error by its errno (ECONNREFUSED,
// ETIMEDOUT, …), "canceled" when the gateway or the dial slot gave up.
func dialErrName(err error) string {
	var errno syscall.Errno
	switch {
	case errors.As(err, &errno):
		if name := errnoNames[errno]; name != "" {
			return name
		}
		return fmt.Sprintf("errno_%d", int(errno))
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return "ETIMEDOUT"
	}
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return "ETIMEDOUT"
	}
	return "other"
}

var errnoNames = map[syscall.Errno]string{
	syscall.ECONNREFUSED: "ECONNREFUSED", syscall.EHOSTUNREACH: "EHOSTUNREACH", syscall.ENETUNREACH: "ENETUNREACH",
	syscall.ETIMEDOUT: "ETIMEDOUT", syscall.EHOSTDOWN: "EHOSTDOWN", syscall.ECONNRESET: "ECONNRESET",
	syscall.EACCES: "EACCES", syscall.EPERM: "EPERM", syscall.EADDRNOTAVAIL: "EADDRNOTAVAIL", syscall.ENETDOWN: "ENETDOWN",
}

// DialStats is a snapshot of the host TCP dials.
type DialStats struct {
	Started, Succeeded uint64
	// Failed counts the dials that failed, by errno name.
	Failed map[string]uint64
	// Buckets count the successful dials by latency, cumulatively: the
	// count of those that took at most Bounds[i] seconds. Sum is their
	// total time in seconds.
	Bounds  []float64
	Buckets []uint64
	Sum     float64
}

// DialStats returns the dial counters.
func (g *Gateway) DialStats() DialStats {
	s := &g.dialStats
	out := DialStats{Started: s.started.Load(), Succeeded: s.ok.Load(), Failed: map[string]uint64{}, Bounds: append([]float64(nil), dialBuckets...), Sum: float64(s.sumNs.Load()) / 1e9}
	var cum uint64
	for i := range dialBuckets {
		cum += s.buckets[i].Load()
		out.Buckets = append(out.Buckets, cum)
	}
	s.mu.Lock()
	for k, v := range s.failed {
		out.Failed[k] = v
	}
	s.mu.Unlock()
	return out
}
