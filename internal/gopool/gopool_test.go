package gopool

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// waiting returns the number of goroutines waiting for work.
func (p *Pool) waiting() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// goid returns the calling goroutine's id, from its stack trace header.
func goid() int {
	var b [64]byte
	s := b[:runtime.Stack(b[:], false)]
	s = bytes.TrimPrefix(s, []byte("goroutine "))
	id, _ := strconv.Atoi(string(s[:bytes.IndexByte(s, ' ')]))
	return id
}

// run runs f on p and waits for it to return.
func run(t *testing.T, p *Pool, f func()) {
	t.Helper()
	done := make(chan struct{})
	if !p.Go(func() { defer close(done); f() }) {
		t.Fatal("Go refused an open pool")
	}
	<-done
	waitFor(t, func() bool { return p.waiting() > 0 })
}

// waitFor waits up to 5 s for cond.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitGoroutines waits until at most n goroutines run.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, want at most %d", runtime.NumGoroutine(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSequentialFunctionsShareOneGoroutine(t *testing.T) {
	p := New(Options{})
	defer p.Close()
	ids := map[int]bool{}
	for range 100 {
		run(t, p, func() { ids[goid()] = true })
	}
	if len(ids) != 1 {
		t.Fatalf("100 functions one after another ran on %d goroutines, want 1", len(ids))
	}
	if n := p.waiting(); n != 1 {
		t.Fatalf("%d goroutines wait after the functions, want 1", n)
	}
}

func TestIdleGoroutinesEnd(t *testing.T) {
	base := runtime.NumGoroutine()
	p := New(Options{IdleTimeout: 20 * time.Millisecond})
	defer p.Close()
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 8 {
		wg.Add(1)
		p.Go(func() { defer wg.Done(); <-release })
	}
	if n := runtime.NumGoroutine(); n < base+8 {
		t.Fatalf("%d goroutines while 8 functions block, want %d", n, base+8)
	}
	close(release)
	wg.Wait()
	waitGoroutines(t, base)
	// A pool whose goroutines ended starts new ones.
	run(t, p, func() {})
}

func TestMaxIdleBoundsWaitingGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	p := New(Options{MaxIdle: 3, IdleTimeout: time.Minute})
	defer p.Close()
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 10 {
		wg.Add(1)
		p.Go(func() { defer wg.Done(); <-release })
	}
	close(release)
	wg.Wait()
	waitGoroutines(t, base+3)
	time.Sleep(20 * time.Millisecond)
	if n := p.waiting(); n != 3 {
		t.Fatalf("%d goroutines wait, want 3", n)
	}
}

func TestCloseEndsWaitingAndWaitsForRunning(t *testing.T) {
	base := runtime.NumGoroutine()
	p := New(Options{IdleTimeout: time.Minute})
	run(t, p, func() {}) // one waits
	started := make(chan struct{})
	var finished bool
	p.Go(func() {
		close(started)
		time.Sleep(50 * time.Millisecond)
		finished = true
	})
	<-started
	p.Close()
	if !finished {
		t.Fatal("Close returned before a running function did")
	}
	if p.Go(func() { t.Error("ran after Close") }) {
		t.Fatal("Go after Close returned true")
	}
	p.Close() // idempotent
	waitGoroutines(t, base)
}

func TestTimeoutRacingGoLosesNoFunction(t *testing.T) {
	// Workers time out while functions keep coming at about that pace:
	// every function must run once.
	p := New(Options{IdleTimeout: time.Millisecond})
	defer p.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	ran := 0
	for i := range 300 {
		wg.Add(1)
		if !p.Go(func() { defer wg.Done(); mu.Lock(); ran++; mu.Unlock() }) {
			t.Fatal("Go refused")
		}
		if i%3 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	wg.Wait()
	if ran != 300 {
		t.Fatalf("%d of 300 functions ran", ran)
	}
}

// deep uses about 16 KiB of stack, as a dial or a TCP send does.
//
//go:noinline
func deep(n int) byte {
	var b [512]byte
	b[n%512] = byte(n)
	if n == 0 {
		return b[0]
	}
	return deep(n-1) + b[n%512]
}

// BenchmarkStart compares starting a function that grows its stack to
// 16 KiB on a new goroutine and on a pool's.
func BenchmarkStart(b *testing.B) {
	b.Run("go", func(b *testing.B) {
		done := make(chan struct{})
		for b.Loop() {
			go func() { deep(30); done <- struct{}{} }()
			<-done
		}
	})
	b.Run("pool", func(b *testing.B) {
		p := New(Options{})
		defer p.Close()
		done := make(chan struct{})
		for b.Loop() {
			p.Go(func() { deep(30); done <- struct{}{} })
			<-done
		}
	})
}
