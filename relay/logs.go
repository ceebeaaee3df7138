package relay

import (
	"fmt"
	"sync"
	"time"
)

// limitLogEvery is how often one cause of refusals or drops is logged.
const limitLogEvery = time.Minute

// maxRefusalKeys bounds the set of destinations whose refusal was logged
// (each is logged once); beyond it refusals are only counted, with one
// line per limitLogEvery.
const maxRefusalKeys = 1024

// logLimiter logs each cause at most once per limitLogEvery, and each
// refused destination once, from a bounded set.
type logLimiter struct {
	mu      sync.Mutex
	last    map[string]time.Time // by cause; protected by mu
	refused map[string]bool      // protected by mu
}

// allow says whether cause may be logged now.
func (l *logLimiter) allow(cause string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	now := time.Now()
	if t, ok := l.last[cause]; ok && now.Sub(t) < limitLogEvery {
		return false
	}
	l.last[cause] = now
	return true
}

// firstRefusal says whether key's refusal is to be logged: the first
// time, while the set has room.
func (l *logLimiter) firstRefusal(key string) (log, full bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refused == nil {
		l.refused = map[string]bool{}
	}
	if l.refused[key] {
		return false, false
	}
	if len(l.refused) >= maxRefusalKeys {
		return false, true
	}
	l.refused[key] = true
	return true, false
}

// limitLog logs one line for cause at most once per limitLogEvery.
func (g *Gateway) limitLog(cause, format string, args ...any) {
	if g.cfg.Log != nil {
		if g.logs.allow(cause) {
			g.cfg.Log.Warn(fmt.Sprintf(format, args...), "cause", cause)
		}
		return
	}
	if g.cfg.Logf != nil && g.logs.allow(cause) {
		g.cfg.Logf(format, args...)
	}
}
