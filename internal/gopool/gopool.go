// Package gopool runs functions on goroutines that outlive them. A
// goroutine whose function has returned waits a while for the next one,
// so that the stack the last function grew need not grow again: in a
// relay that starts a few goroutines per connection, copying stacks as
// they grow (2 KiB, 4, 8, 16) was the largest cost after the syscalls.
//
// Start with New and Pool.Go.
package gopool

import (
	"slices"
	"sync"
	"time"
)

// Options configure a Pool. The zero value of each field is its default.
type Options struct {
	// MaxIdle bounds the goroutines that wait for work. Zero means 64.
	MaxIdle int

	// IdleTimeout is how long a goroutine waits for work before it ends.
	// Zero means one second.
	IdleTimeout time.Duration
}

// Pool starts functions on waiting goroutines, or on new ones when none
// waits. Close ends the waiting goroutines and waits for the running
// ones; a Pool holds no goroutine once its goroutines have been idle for
// IdleTimeout.
type Pool struct {
	maxIdle int
	timeout time.Duration

	mu      sync.Mutex
	idle    []*worker // waiting, the most recent last; protected by mu
	closed  bool      // protected by mu
	running sync.WaitGroup
}

// worker is one goroutine of a Pool; work hands it its next function
// (nil: end).
type worker struct {
	work chan func()
}

// New returns an empty Pool.
func New(opts Options) *Pool {
	p := &Pool{maxIdle: opts.MaxIdle, timeout: opts.IdleTimeout}
	if p.maxIdle <= 0 {
		p.maxIdle = 64
	}
	if p.timeout <= 0 {
		p.timeout = time.Second
	}
	return p
}

// Go runs f on a goroutine of the pool. It returns false, without
// running f, once Close has begun.
func (p *Pool) Go(f func()) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.work <- f // has room: a waiting worker's channel is empty
		return true
	}
	p.running.Add(1)
	p.mu.Unlock()
	go p.run(f)
	return true
}

// run is one worker: it runs f, then what Go hands it, until it has
// waited IdleTimeout in vain, the pool has enough waiting, or Close.
func (p *Pool) run(f func()) {
	defer p.running.Done()
	w := &worker{work: make(chan func(), 1)}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for f != nil {
		f()
		f = nil // let what f holds go while waiting
		if !p.park(w) {
			return
		}
		if timer == nil {
			timer = time.NewTimer(p.timeout)
		} else {
			timer.Reset(p.timeout)
		}
		select {
		case f = <-w.work:
		case <-timer.C:
			if p.unpark(w) {
				return
			}
			f = <-w.work // Go took w at the same time
		}
	}
}

// park puts w among the waiting workers; false if it should end instead.
func (p *Pool) park(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle) >= p.maxIdle {
		return false
	}
	p.idle = append(p.idle, w)
	return true
}

// unpark takes w out of the waiting workers; false if Go or Close took
// it first (and sends it its next function).
func (p *Pool) unpark(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.idle {
		if x == w {
			p.idle = slices.Delete(p.idle, i, i+1)
			return true
		}
	}
	return false
}

// Close makes Go refuse, ends the waiting goroutines and waits for the
// running functions to return. It is idempotent.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, w := range idle {
		w.work <- nil
	}
	p.running.Wait()
}
