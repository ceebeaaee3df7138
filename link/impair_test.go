package link

import (
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseImpairSpec(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"loss=1%,delay=20ms,jitter=5ms,reorder=1%,dup=0.1%,rate=100mbit", "loss=1%,dup=0.1%,reorder=1%,delay=20ms,jitter=5ms,rate=100000000bit"},
		{"off", "off"},
		{"", "off"},
		{"in:loss=5%", "in:loss=5%"},
		{"out:delay=1ms,in:rate=1mbps", "in:rate=8000000bit,out:delay=1ms"},
		{"corrupt=0.5,limit=10", "corrupt=0.5%,limit=10"},
	} {
		s, err := ParseImpairSpec(tc.in)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if got := s.String(); got != tc.want {
			t.Errorf("%q: String = %q, want %q", tc.in, got, tc.want)
		}
		again, err := ParseImpairSpec(s.String())
		if err != nil || again != s {
			t.Errorf("%q: does not round-trip: %+v %v", tc.in, again, err)
		}
	}
	for _, bad := range []string{"loss", "loss=101%", "loss=-1%", "delay=soon", "delay=2m", "rate=fast", "rate=1bit", "jitter=10ms", "colour=red", "in:", "limit=0", "loss=NaN"} {
		if _, err := ParseImpairSpec(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// numbered is a 100-byte frame carrying i.
func numbered(i int) [][]byte {
	f := make([]byte, 100)
	binary.BigEndian.PutUint32(f[60:], uint32(i))
	return [][]byte{f}
}

// throughOut writes n numbered frames through an Impair of spec (out)
// and returns the numbers read at the other end of the cable, in order,
// once nothing more comes for quiet. The writer keeps at most 500
// frames on their way (the cable holds 4096, the Impair 1000).
func throughOut(t *testing.T, spec string, seed int64, n int, quiet time.Duration) ([]int, ImpairStats) {
	t.Helper()
	s, err := ParseImpairSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	a, b := Pipe()
	d := NewImpair(a, s, ImpairOptions{Seed: seed})
	defer d.Close()
	var read atomic.Int64
	got := make(chan []int)
	go func() {
		var nums []int
		buf := make([]byte, 2048)
		for {
			if _, err := b.ReadFrame(buf); err != nil {
				got <- nums
				return
			}
			nums = append(nums, int(binary.BigEndian.Uint32(buf[60:])))
			read.Add(1)
		}
	}()
	for i := 0; i < n; i++ {
		for {
			_, st := d.Stats()
			if int64(st.Frames-st.Dropped-st.Overflowed+st.Duplicated)-read.Load() < 500 {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		if err := d.WriteFrame(numbered(i)); err != nil {
			t.Fatal(err)
		}
	}
	for last := int64(-1); read.Load() != last; time.Sleep(quiet) {
		last = read.Load()
	}
	b.Close()
	nums := <-got
	_, out := d.Stats()
	return nums, out
}

// TestImpairLossIsAccurate: over 100 000 frames each way a 5 % loss
// loses 5 % within 0.5 % (seven standard deviations of the binomial).
func TestImpairLossIsAccurate(t *testing.T) {
	const n = 100000
	nums, st := throughOut(t, "loss=5%", 1, n, 200*time.Millisecond)
	lost := n - len(nums)
	if rate := float64(lost) / n; rate < 0.045 || rate > 0.055 || uint64(lost) != st.Dropped {
		t.Fatalf("out: lost %d of %d (%.2f %%), stats %+v", lost, n, 100*rate, st)
	}
	// In: frames written to the far end, read through the Impair.
	s, _ := ParseImpairSpec("in:loss=5%")
	a, b := Pipe()
	d := NewImpair(a, s, ImpairOptions{Seed: 2})
	defer d.Close()
	var read atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, err := d.ReadFrame(buf); err != nil {
				return
			}
			read.Add(1)
		}
	}()
	for i := 0; i < n; i++ {
		for {
			in, _ := d.Stats()
			if int64(i)-int64(in.Frames) < 2000 {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		b.WriteFrame(numbered(i))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		in, _ := d.Stats()
		if in.Frames == n || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	d.Close()
	<-done
	in, _ := d.Stats()
	if rate := float64(in.Dropped) / n; in.Frames != n || rate < 0.045 || rate > 0.055 || uint64(read.Load()) != n-in.Dropped {
		t.Fatalf("in: %+v, read %d", in, read.Load())
	}
}

// TestImpairReplaysWithItsSeed: the same seed drops the same frames;
// another seed drops others.
func TestImpairReplaysWithItsSeed(t *testing.T) {
	first, _ := throughOut(t, "loss=10%,dup=1%,corrupt=1%", 42, 5000, 100*time.Millisecond)
	again, _ := throughOut(t, "loss=10%,dup=1%,corrupt=1%", 42, 5000, 100*time.Millisecond)
	other, _ := throughOut(t, "loss=10%,dup=1%,corrupt=1%", 43, 5000, 100*time.Millisecond)
	if !slices.Equal(first, again) {
		t.Fatal("seed 42 twice: different fates")
	}
	if slices.Equal(first, other) {
		t.Fatal("seeds 42 and 43: the same fates")
	}
}

// TestImpairDupCorruptReorder: duplicates arrive twice, corrupted frames
// differ past the headers, reordered frames are overtaken.
func TestImpairDupCorruptReorder(t *testing.T) {
	nums, st := throughOut(t, "dup=10%", 3, 10000, 100*time.Millisecond)
	if uint64(len(nums)) != 10000+st.Duplicated || st.Duplicated < 800 || st.Duplicated > 1200 {
		t.Fatalf("dup: %d frames arrived, stats %+v", len(nums), st)
	}
	nums, st = throughOut(t, "reorder=10%", 4, 2000, 100*time.Millisecond)
	late := 0
	for i := 1; i < len(nums); i++ {
		if nums[i] < nums[i-1] {
			late++
		}
	}
	if len(nums) != 2000 || late == 0 || st.Reordered < 100 {
		t.Fatalf("reorder: %d frames, %d out of order, stats %+v", len(nums), late, st)
	}
	s, _ := ParseImpairSpec("corrupt=100%")
	a, b := Pipe()
	d := NewImpair(a, s, ImpairOptions{Seed: 5})
	defer d.Close()
	frame := numbered(7)
	orig := append([]byte(nil), frame[0]...)
	d.WriteFrame(frame)
	buf := make([]byte, 2048)
	n, _ := b.ReadFrame(buf)
	diff := 0
	for i := range orig {
		if buf[i] != orig[i] {
			diff++
			if i < 34 {
				t.Fatalf("byte %d (a header) corrupted", i)
			}
		}
	}
	if n != len(orig) || diff != 1 {
		t.Fatalf("corrupt: %d bytes, %d differ", n, diff)
	}
}

// TestImpairDelayAndRate: a delay holds each frame that long; a rate
// spaces frames by their length over it.
func TestImpairDelayAndRate(t *testing.T) {
	s, _ := ParseImpairSpec("delay=30ms")
	a, b := Pipe()
	d := NewImpair(a, s, ImpairOptions{})
	defer d.Close()
	buf := make([]byte, 2048)
	for i := 0; i < 5; i++ {
		start := time.Now()
		d.WriteFrame(numbered(i))
		b.ReadFrame(buf)
		if took := time.Since(start); took < 30*time.Millisecond || took > 100*time.Millisecond {
			t.Fatalf("frame %d took %v through a 30 ms delay", i, took)
		}
	}
	// 100-byte frames at 80 kbit/s: 10 ms each, 20 of them 200 ms.
	d.Set(ImpairSpec{Out: Impairment{Rate: 80000}})
	start := time.Now()
	for i := 0; i < 20; i++ {
		d.WriteFrame(numbered(i))
	}
	for i := 0; i < 20; i++ {
		b.ReadFrame(buf)
	}
	if took := time.Since(start); took < 190*time.Millisecond || took > 500*time.Millisecond {
		t.Fatalf("20 frames of 800 bits at 80 kbit/s took %v, want 200 ms", took)
	}
}

// TestImpairSetAndClose: an impairment set while frames flow takes hold,
// removed it stops, and Close leaves no goroutine behind.
func TestImpairSetAndClose(t *testing.T) {
	before := runtime.NumGoroutine()
	a, b := Pipe()
	d := NewImpair(a, ImpairSpec{}, ImpairOptions{Seed: 9})
	buf := make([]byte, 2048)
	read := func() int {
		n, err := d.ReadFrame(buf)
		if err != nil {
			t.Fatal(err)
		}
		return int(binary.BigEndian.Uint32(buf[60:n]))
	}
	b.WriteFrame(numbered(1))
	if read() != 1 {
		t.Fatal("untouched frame")
	}
	d.Set(ImpairSpec{In: Impairment{Loss: 1}})
	b.WriteFrame(numbered(2)) // lost
	b.WriteFrame(numbered(3)) // lost
	got := make(chan int)
	go func() { got <- read() }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if in, _ := d.Stats(); in.Dropped == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("frames 2 and 3 not lost")
		}
	}
	d.Set(ImpairSpec{})
	b.WriteFrame(numbered(4)) // the pump's last frame, untouched
	b.WriteFrame(numbered(5)) // read directly
	if n := <-got; n != 4 {
		t.Fatalf("after the loss was removed: frame %d, want 4", n)
	}
	if n := read(); n != 5 {
		t.Fatalf("frame %d, want 5", n)
	}
	if in, _ := d.Stats(); in.Dropped != 2 || in.Frames != 3 {
		t.Fatalf("in: %+v, want 3 frames impaired, 2 dropped", in)
	}
	d.Set(ImpairSpec{Out: Impairment{Delay: time.Hour}})
	d.WriteFrame(numbered(6)) // held when Close comes
	d.Close()
	b.Close()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d, before %d", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestImpairHoldsTheFrameAReadWaitedFor: a read that began before an
// inbound impairment was set hands the frame it gets to the impairment
// too: the first frame after Set is delayed like the rest.
func TestImpairHoldsTheFrameAReadWaitedFor(t *testing.T) {
	a, b := Pipe()
	d := NewImpair(a, ImpairSpec{}, ImpairOptions{})
	defer d.Close()
	got := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 2048)
		if _, err := d.ReadFrame(buf); err != nil {
			t.Errorf("ReadFrame: %v", err)
		}
		got <- time.Now()
	}()
	time.Sleep(20 * time.Millisecond) // the read waits
	s, _ := ParseImpairSpec("in:delay=30ms")
	d.Set(s)
	start := time.Now()
	if err := b.WriteFrame(numbered(1)); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-got:
		if took := at.Sub(start); took < 30*time.Millisecond {
			t.Fatalf("the frame a read waited for came in %v through a 30 ms delay", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the frame did not come")
	}
	if in, _ := d.Stats(); in.Delayed != 1 {
		t.Fatalf("%d frames delayed, want 1", in.Delayed)
	}
}

// TestImpairCloseWhileReading: reads that go on while the Impair closes
// (a reader goroutine that retries after an error) start no pump once
// Close waits for its goroutines, and end with the closed error.
func TestImpairCloseWhileReading(t *testing.T) {
	s, _ := ParseImpairSpec("in:loss=5%")
	for i := 0; i < 50; i++ {
		a, b := Pipe()
		d := NewImpair(a, s, ImpairOptions{Seed: int64(i)})
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, 2048)
			var err error
			for j := 0; j < 1000; j++ {
				if _, err = d.ReadFrame(buf); err == nil {
					j = 0
				}
			}
			done <- err
		}()
		for j := 0; j < 20; j++ {
			b.WriteFrame(numbered(j))
		}
		time.Sleep(time.Millisecond)
		d.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("reads after Close: %v, want %v", err, net.ErrClosed)
		}
		b.Close()
	}
}
