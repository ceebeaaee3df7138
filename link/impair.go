package link

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Impairment is what a wire does to the frames that go one way: it loses,
// duplicates, corrupts, delays (with jitter), reorders them and limits
// their rate. The zero value passes every frame untouched.
type Impairment struct {
	Loss    float64       // fraction of frames dropped, 0..1
	Dup     float64       // fraction of frames sent twice
	Corrupt float64       // fraction of frames with one bit flipped past the headers
	Reorder float64       // fraction of frames held back by ReorderGap, so that later ones overtake them
	Delay   time.Duration // added to every frame
	Jitter  time.Duration // each frame's delay varies uniformly by up to ± this
	Rate    uint64        // bits per second the wire carries (0: no limit)
	// Limit bounds the frames held (delayed or waiting for the rate);
	// more are dropped, as a full queue drops (DefaultImpairLimit if 0).
	Limit int
}

// DefaultImpairLimit is how many frames one direction of an impaired wire
// holds at most unless told otherwise (netem's default).
const DefaultImpairLimit = 1000

// ReorderGap is how long a reordered frame is held back beyond its delay.
const ReorderGap = time.Millisecond

// IsZero says whether the impairment passes frames untouched.
func (m Impairment) IsZero() bool {
	return m.Loss == 0 && m.Dup == 0 && m.Corrupt == 0 && m.Reorder == 0 && m.Delay == 0 && m.Jitter == 0 && m.Rate == 0
}

// timed says whether frames may be held rather than passed on at once.
func (m Impairment) timed() bool {
	return m.Delay > 0 || m.Jitter > 0 || m.Reorder > 0 || m.Rate > 0
}

// ImpairSpec is an Impairment for each direction: In for frames from the
// device towards the stack, Out for frames from the stack to the device.
type ImpairSpec struct {
	In, Out Impairment
}

// IsZero says whether the spec impairs nothing.
func (s ImpairSpec) IsZero() bool { return s.In.IsZero() && s.Out.IsZero() }

// ParseImpairSpec parses a comma-separated list of KEY=VALUE, each for
// both directions unless prefixed with "in:" or "out:":
//
//	loss=1%  dup=0.1%  corrupt=0.1%  reorder=1%   fractions of frames
//	delay=20ms  jitter=5ms                        Go durations
//	rate=100mbit                                  bit, kbit, mbit, gbit (per second); bps, kbps, mbps, gbps are bytes
//	limit=1000                                    frames held at most
//
// "off" and "" are the zero spec.
func ParseImpairSpec(spec string) (ImpairSpec, error) {
	var s ImpairSpec
	spec = strings.TrimSpace(spec)
	if spec == "" || spec == "off" {
		return s, nil
	}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		dirs := []*Impairment{&s.In, &s.Out}
		switch {
		case strings.HasPrefix(item, "in:"):
			item, dirs = item[3:], []*Impairment{&s.In}
		case strings.HasPrefix(item, "out:"):
			item, dirs = item[4:], []*Impairment{&s.Out}
		}
		k, v, ok := strings.Cut(item, "=")
		if !ok || v == "" {
			return ImpairSpec{}, fmt.Errorf("impairment %q: want KEY=VALUE (loss, dup, corrupt, reorder, delay, jitter, rate, limit)", item)
		}
		for _, d := range dirs {
			if err := d.set(k, v); err != nil {
				return ImpairSpec{}, fmt.Errorf("impairment %q: %w", item, err)
			}
		}
	}
	for _, d := range []Impairment{s.In, s.Out} {
		if d.Jitter > 0 && d.Jitter > d.Delay {
			return ImpairSpec{}, fmt.Errorf("impairment: jitter %v is more than the delay %v", d.Jitter, d.Delay)
		}
	}
	return s, nil
}

func (m *Impairment) set(k, v string) error {
	switch k {
	case "loss", "dup", "corrupt", "reorder":
		f, err := parseFraction(v)
		if err != nil {
			return err
		}
		switch k {
		case "loss":
			m.Loss = f
		case "dup":
			m.Dup = f
		case "corrupt":
			m.Corrupt = f
		default:
			m.Reorder = f
		}
	case "delay", "jitter":
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > time.Minute {
			return fmt.Errorf("%s %q: want a duration from 0 to 1m, such as 20ms", k, v)
		}
		if k == "delay" {
			m.Delay = d
		} else {
			m.Jitter = d
		}
	case "rate":
		r, err := parseRate(v)
		if err != nil {
			return err
		}
		m.Rate = r
	case "limit":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1<<20 {
			return fmt.Errorf("limit %q: want 1 to %d frames", v, 1<<20)
		}
		m.Limit = n
	default:
		return fmt.Errorf("unknown key %q (loss, dup, corrupt, reorder, delay, jitter, rate, limit)", k)
	}
	return nil
}

// parseFraction reads "1%", "0.5%" or a bare number of percent.
func parseFraction(v string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	if err != nil || f < 0 || f > 100 || math.IsNaN(f) {
		return 0, fmt.Errorf("%q: want a percentage from 0%% to 100%%", v)
	}
	return f / 100, nil
}

// rateUnits are tc's: bits per second, and bps for bytes per second.
var rateUnits = []struct {
	suffix string
	mult   float64
}{
	{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1},
	{"gbps", 8e9}, {"mbps", 8e6}, {"kbps", 8e3}, {"bps", 8},
}

func parseRate(v string) (uint64, error) {
	lv := strings.ToLower(v)
	for _, u := range rateUnits {
		if num, ok := strings.CutSuffix(lv, u.suffix); ok {
			f, err := strconv.ParseFloat(num, 64)
			if err == nil && f > 0 && f*u.mult >= 8000 && f*u.mult <= 1e12 {
				return uint64(f * u.mult), nil
			}
			break
		}
	}
	return 0, fmt.Errorf("rate %q: want 8kbit to 1000gbit, such as 100mbit (bit, kbit, mbit, gbit; bps, kbps, mbps, gbps are bytes)", v)
}

// String writes the impairment back in ParseImpairSpec's syntax, with
// prefix before each key.
func (m Impairment) string(prefix string) []string {
	var out []string
	pct := func(k string, f float64) {
		if f > 0 {
			out = append(out, fmt.Sprintf("%s%s=%s%%", prefix, k, strconv.FormatFloat(f*100, 'f', -1, 64)))
		}
	}
	pct("loss", m.Loss)
	pct("dup", m.Dup)
	pct("corrupt", m.Corrupt)
	pct("reorder", m.Reorder)
	if m.Delay > 0 {
		out = append(out, fmt.Sprintf("%sdelay=%v", prefix, m.Delay))
	}
	if m.Jitter > 0 {
		out = append(out, fmt.Sprintf("%sjitter=%v", prefix, m.Jitter))
	}
	if m.Rate > 0 {
		out = append(out, fmt.Sprintf("%srate=%dbit", prefix, m.Rate))
	}
	if m.Limit > 0 {
		out = append(out, fmt.Sprintf("%slimit=%d", prefix, m.Limit))
	}
	return out
}

// String is the spec in ParseImpairSpec's syntax ("off" when zero).
func (s ImpairSpec) String() string {
	if s.IsZero() {
		return "off"
	}
	if s.In == s.Out {
		return strings.Join(s.In.string(""), ",")
	}
	return strings.Join(append(s.In.string("in:"), s.Out.string("out:")...), ",")
}

// ImpairStats count what an impaired wire did, one way.
type ImpairStats struct {
	Frames     uint64 // frames offered
	Dropped    uint64 // lost by Loss
	Overflowed uint64 // dropped because Limit frames were held
	Duplicated uint64
	Corrupted  uint64
	Reordered  uint64
	Delayed    uint64 // frames held for their delay or the rate
}

// Impair wraps a Device with an impairment of each direction, changeable
// while frames flow. Its decisions come from a random source seeded with
// the seed it was made with: the same frames in the same order meet the
// same fate. With a zero spec a frame costs one atomic load.
type Impair struct {
	dev  Device
	seed int64
	vnet bool
	in   *lane
	out  *lane

	// The inbound pump, running while In is not zero: it reads the
	// device into the in lane, which hands frames to ready.
	ready    chan inFrame
	pumpMu   sync.Mutex
	pumping  bool          // protected by pumpMu
	pumpDone chan struct{} // closed when the pump exits; protected by pumpMu
	// inBusy is set while the pump runs or the in lane may hold frames:
	// reads then go through them.
	inBusy atomic.Bool

	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

type inFrame struct {
	b   *[]byte
	err error
}

// ImpairOptions configure an Impair.
type ImpairOptions struct {
	// Seed of the decisions; the same seed replays them.
	Seed int64
	// VnetHdr says frames carry a virtio_net_hdr (link.Options.VnetHdr):
	// a corrupted frame then loses its checksum offload flags, so that
	// the receiver checks the checksum and drops it, as it would drop a
	// frame corrupted on a real wire.
	VnetHdr bool
}

// NewImpair wraps dev. The Impair owns dev: Close closes it.
func NewImpair(dev Device, spec ImpairSpec, opts ImpairOptions) *Impair {
	d := &Impair{dev: dev, seed: opts.Seed, vnet: opts.VnetHdr, ready: make(chan inFrame, 64), closed: make(chan struct{})}
	d.out = newLane(opts.Seed, d.vnet, func(b *[]byte) {
		_ = dev.WriteFrame([][]byte{*b})
		putImpairBuf(b)
	}, d.closed, &d.wg)
	d.in = newLane(opts.Seed^0x5bd1e995, d.vnet, func(b *[]byte) {
		select {
		case d.ready <- inFrame{b: b}:
		case <-d.closed:
			putImpairBuf(b)
		}
	}, d.closed, &d.wg)
	d.Set(spec)
	return d
}

// Seed is the seed of the decisions.
func (d *Impair) Seed() int64 { return d.seed }

// Set changes the impairment; frames already held keep their schedule.
func (d *Impair) Set(spec ImpairSpec) {
	d.in.set(spec.In)
	d.out.set(spec.Out)
}

// Spec is the impairment in force.
func (d *Impair) Spec() ImpairSpec {
	return ImpairSpec{In: d.in.get(), Out: d.out.get()}
}

// Stats count what each direction did.
func (d *Impair) Stats() (in, out ImpairStats) { return d.in.stats(), d.out.stats() }

// WriteFrame implements Device: the frame goes out impaired.
func (d *Impair) WriteFrame(bufs [][]byte) error {
	if d.out.spec.Load() == nil {
		return d.dev.WriteFrame(bufs)
	}
	select {
	case <-d.closed:
		return errClosed
	default:
	}
	b := getImpairBuf()
	for _, p := range bufs {
		*b = append(*b, p...)
	}
	d.out.submit(b)
	return nil
}

// ReadFrame implements Device: frames come in impaired.
func (d *Impair) ReadFrame(b []byte) (int, error) {
	if d.in.spec.Load() == nil && !d.inBusy.Load() {
		n, err := d.dev.ReadFrame(b)
		if err != nil || !d.divertIn(b[:n]) {
			return n, err
		}
		// An impairment came in while the read waited: the frame went
		// to the lane, and what the lane passes on follows.
	}
	return d.readImpaired(b)
}

// divertIn puts frame, read directly from the device, into the in lane
// if an impairment came in meanwhile, so that no frame read after Set
// passes unimpaired; it reports whether it did.
func (d *Impair) divertIn(frame []byte) bool {
	if d.in.spec.Load() == nil {
		return false
	}
	c := getImpairBuf()
	*c = append(*c, frame...)
	d.in.submit(c)
	return true
}

// readImpaired reads through the pump and the in lane, until both are
// done with an impairment that was removed.
func (d *Impair) readImpaired(b []byte) (int, error) {
	for {
		d.pumpMu.Lock()
		select {
		case <-d.closed: // no pump starts once Close waits for them
			d.pumpMu.Unlock()
			return 0, errClosed
		default:
		}
		pumping, done := d.pumping, d.pumpDone
		if !pumping && d.in.spec.Load() != nil {
			d.pumping, d.pumpDone = true, make(chan struct{})
			pumping, done = true, d.pumpDone
			d.inBusy.Store(true)
			d.wg.Add(1)
			go d.pump(len(b), d.pumpDone)
		}
		d.pumpMu.Unlock()
		if pumping {
			select {
			case f := <-d.ready:
				return d.take(b, f)
			case <-done: // In became zero: read directly once the lane is empty
			case <-d.closed:
				return 0, errClosed
			}
			continue
		}
		select {
		case f := <-d.ready:
			return d.take(b, f)
		default:
		}
		if d.in.held() == 0 && len(d.ready) == 0 {
			d.inBusy.Store(false)
			return d.dev.ReadFrame(b)
		}
		// Frames the lane still holds come first.
		select {
		case f := <-d.ready:
			return d.take(b, f)
		case <-time.After(time.Millisecond):
		case <-d.closed:
			return 0, errClosed
		}
	}
}

func (d *Impair) take(b []byte, f inFrame) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n := copy(b, *f.b)
	putImpairBuf(f.b)
	return n, nil
}

// pump reads the device into the in lane until In is zero again or the
// device fails.
func (d *Impair) pump(size int, done chan struct{}) {
	defer d.wg.Done()
	defer func() {
		d.pumpMu.Lock()
		d.pumping = false
		close(done)
		d.pumpMu.Unlock()
	}()
	buf := make([]byte, size)
	for d.in.spec.Load() != nil {
		n, err := d.dev.ReadFrame(buf)
		if err != nil {
			select {
			case d.ready <- inFrame{err: err}:
			case <-d.closed:
			}
			return
		}
		b := getImpairBuf()
		*b = append(*b, buf[:n]...)
		d.in.submit(b)
	}
}

// Close closes the device and stops the lanes; held frames are dropped.
func (d *Impair) Close() error {
	var err error
	d.closeOnce.Do(func() {
		d.pumpMu.Lock() // a read starts no pump after this (readImpaired)
		close(d.closed)
		d.pumpMu.Unlock()
		err = d.dev.Close()
		d.wg.Wait()
	})
	return err
}

var impairBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

func getImpairBuf() *[]byte {
	b := impairBufs.Get().(*[]byte)
	*b = (*b)[:0]
	return b
}

func putImpairBuf(b *[]byte) {
	if cap(*b) <= 128<<10 {
		impairBufs.Put(b)
	}
}

// lane impairs one direction: it decides each frame's fate and passes it
// on at once or when its time comes.
type lane struct {
	spec    atomic.Pointer[Impairment] // nil: untouched
	vnet    bool
	deliver func(*[]byte)
	closed  chan struct{}

	mu       sync.Mutex
	rng      *rand.Rand // protected by mu
	queue    heldHeap   // protected by mu
	seq      uint64     // protected by mu: keeps equal times in order
	nextFree time.Time  // protected by mu: when the rate lets the next frame start
	wake     chan struct{}

	frames, dropped, overflowed, duplicated, corrupted, reordered, delayed atomic.Uint64
}

type held struct {
	at  time.Time
	seq uint64
	b   *[]byte
}

type heldHeap []held

func (h heldHeap) Len() int { return len(h) }
func (h heldHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h heldHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *heldHeap) Push(x any)   { *h = append(*h, x.(held)) }
func (h *heldHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = held{} // the buffer is the receiver's now
	*h = old[:len(old)-1]
	return x
}

func newLane(seed int64, vnet bool, deliver func(*[]byte), closed chan struct{}, wg *sync.WaitGroup) *lane {
	l := &lane{vnet: vnet, deliver: deliver, closed: closed, rng: rand.New(rand.NewSource(seed)), wake: make(chan struct{}, 1)}
	wg.Add(1)
	go l.run(wg)
	return l
}

func (l *lane) set(m Impairment) {
	if m.IsZero() {
		l.spec.Store(nil)
		return
	}
	l.spec.Store(&m)
}

func (l *lane) get() Impairment {
	if m := l.spec.Load(); m != nil {
		return *m
	}
	return Impairment{}
}

func (l *lane) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}

func (l *lane) stats() ImpairStats {
	return ImpairStats{
		Frames: l.frames.Load(), Dropped: l.dropped.Load(), Overflowed: l.overflowed.Load(), Duplicated: l.duplicated.Load(),
		Corrupted: l.corrupted.Load(), Reordered: l.reordered.Load(), Delayed: l.delayed.Load(),
	}
}

// submit decides b's fate; b is the lane's from now on.
func (l *lane) submit(b *[]byte) {
	l.frames.Add(1)
	m := l.spec.Load()
	if m == nil {
		l.deliver(b)
		return
	}
	l.mu.Lock()
	// Every frame draws the same numbers in the same order, whatever the
	// knobs: a seed replays the same fates for the same frames.
	lose, dup, corrupt, reorder, jitter := l.rng.Float64(), l.rng.Float64(), l.rng.Float64(), l.rng.Float64(), l.rng.Float64()
	bit := l.rng.Uint32()
	if lose < m.Loss {
		l.mu.Unlock()
		l.dropped.Add(1)
		putImpairBuf(b)
		return
	}
	if corrupt < m.Corrupt {
		if l.corrupt(*b, bit) {
			l.corrupted.Add(1)
		}
	}
	copies := []*[]byte{b}
	if dup < m.Dup {
		c := getImpairBuf()
		*c = append(*c, *b...)
		copies = append(copies, c)
		l.duplicated.Add(1)
	}
	if !m.timed() {
		l.mu.Unlock()
		for _, c := range copies {
			l.deliver(c)
		}
		return
	}
	now := time.Now()
	at := now
	if m.Rate > 0 {
		// The wire serialises frames: each takes its length in bits
		// over the rate, after the one before it.
		start := now
		if l.nextFree.After(start) {
			start = l.nextFree
		}
		l.nextFree = start.Add(time.Duration(float64(len(*b)*8) / float64(m.Rate) * float64(time.Second)))
		at = l.nextFree
	}
	delay := m.Delay
	if m.Jitter > 0 {
		delay += time.Duration((2*jitter - 1) * float64(m.Jitter))
	}
	at = at.Add(delay)
	if reorder < m.Reorder {
		at = at.Add(ReorderGap)
		l.reordered.Add(1)
	}
	limit := m.Limit
	if limit == 0 {
		limit = DefaultImpairLimit
	}
	for _, c := range copies {
		if len(l.queue) >= limit {
			l.overflowed.Add(1)
			putImpairBuf(c)
			continue
		}
		l.seq++
		heap.Push(&l.queue, held{at: at, seq: l.seq, b: c})
		l.delayed.Add(1)
	}
	first := l.queue.Len() > 0 && l.queue[0].seq == l.seq
	l.mu.Unlock()
	if first {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// corrupt flips one bit of b past the Ethernet and IP headers (and the
// virtio_net_hdr, whose checksum flags it clears): the receiver's
// checksum catches it. It reports false for a frame too short to hold
// such a bit.
func (l *lane) corrupt(b []byte, bit uint32) bool {
	off := 14 + 20
	if l.vnet {
		off += vnetHdrSize
	}
	if len(b) <= off {
		return false
	}
	if l.vnet {
		b[0] &^= 0x03 // VIRTIO_NET_HDR_F_NEEDS_CSUM | F_DATA_VALID
	}
	i := off + int(bit>>3)%(len(b)-off)
	b[i] ^= 1 << (bit & 7)
	return true
}

// run passes held frames on when their time comes.
func (l *lane) run(wg *sync.WaitGroup) {
	defer wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		l.mu.Lock()
		var due []*[]byte
		now := time.Now()
		for l.queue.Len() > 0 && !l.queue[0].at.After(now) {
			due = append(due, heap.Pop(&l.queue).(held).b)
		}
		wait := time.Hour
		if l.queue.Len() > 0 {
			wait = l.queue[0].at.Sub(now)
		} else if cap(l.queue) > 64 {
			l.queue = nil // a burst's queue is not kept while idle
		}
		l.mu.Unlock()
		for _, b := range due {
			l.deliver(b)
		}
		if len(due) > 0 {
			continue
		}
		t.Reset(wait)
		select {
		case <-l.closed:
			l.mu.Lock()
			for _, h := range l.queue {
				putImpairBuf(h.b)
			}
			l.queue = nil
			l.mu.Unlock()
			return
		case <-l.wake:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-t.C:
		}
	}
}
