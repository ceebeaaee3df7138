package link

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// DefaultMTU is the IP MTU of an Endpoint whose Options leave MTU at zero.
const DefaultMTU = 1500

// MaxMTU is the largest IP MTU an Endpoint accepts (as pasta uses).
const MaxMTU = 65520

// Direction tells an Observer which way a frame went.
type Direction int

const (
	// Inbound frames came from the device, towards the stack.
	Inbound Direction = iota
	// Outbound frames went from the stack to the device.
	Outbound
)

func (d Direction) String() string {
	if d == Inbound {
		return "in"
	}
	return "out"
}

// An Observer sees every frame that crosses an Endpoint, synchronously, on
// the goroutine that moves it. It must not retain frame after returning.
type Observer interface {
	ObserveFrame(dir Direction, frame []byte)
}

// Options configure an Endpoint. The zero value of each field is its default.
type Options struct {
	// Devices are the queues of the wire, at least one. The Endpoint owns
	// them: it closes them on Close.
	Devices []Device

	// MTU is the IP MTU (the Ethernet payload size). Zero means DefaultMTU.
	MTU uint32

	// Address is the stack side's MAC address. Nil means a random locally
	// administered unicast address.
	Address net.HardwareAddr

	// Observer, if set, sees every frame in both directions.
	Observer Observer

	// VnetHdr says the devices prefix every frame with a virtio_net_hdr
	// (a TAP opened with TAPConfig.Offload): the endpoint then takes and
	// hands over 64 KiB TCP segments with partial checksums (host GSO).
	VnetHdr bool

	// Filter, if set, sees every frame read from the devices (without a
	// virtio_net_hdr) before the stack does; a frame it returns false for
	// is dropped and counted (Stats.RxFiltered). It runs on the reader
	// goroutine for every frame: it must be quick and must not keep frame.
	Filter func(frame []byte) bool

	// Logf, if set, receives one line for each read error of a new kind
	// (errors repeat while a device misbehaves; each kind is logged once).
	Logf func(format string, args ...any)
}

// Stats are the frame counters of an Endpoint.
type Stats struct {
	RxFrames, RxBytes uint64 // frames read from the devices
	TxFrames, TxBytes uint64 // frames written to the devices
	RxErrors          uint64 // read errors other than close, and runt frames
	TxErrors          uint64 // frames a device refused to write
	RxDropped         uint64 // frames read while no stack was attached
	RxFiltered        uint64 // frames Options.Filter dropped
	RxDiverted        uint64 // frames the divert function took (SetDivert)
	Polled            bool   // a poll loop reads the devices (Poll)
}

// Endpoint is a gVisor stack.LinkEndpoint with Ethernet framing over one or
// more Devices. It starts one reader goroutine per device on the first
// Attach, stops them when Close closes the devices, and joins them in Wait.
type Endpoint struct {
	*ethernet.Endpoint
	raw *rawEndpoint
}

var _ stack.LinkEndpoint = (*Endpoint)(nil)

// New returns an Endpoint over opts.Devices.
func New(opts Options) (*Endpoint, error) {
	if len(opts.Devices) == 0 {
		return nil, errors.New("link: no devices")
	}
	mtu := opts.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < 68 || mtu > MaxMTU {
		return nil, fmt.Errorf("link: MTU %d out of range 68..%d", mtu, MaxMTU)
	}
	mac := opts.Address
	if mac == nil {
		mac = RandomMAC()
	}
	if len(mac) != 6 || mac[0]&1 != 0 {
		return nil, fmt.Errorf("link: %v is not a unicast Ethernet address", mac)
	}
	r := &rawEndpoint{
		devices: opts.Devices,
		addr:    tcpip.LinkAddress(mac),
		vnet:    opts.VnetHdr,
		logf:    opts.Logf,
		filter:  opts.Filter,
		failed:  make(chan struct{}),
		closing: make(chan struct{}),
	}
	r.mtu.Store(mtu + header.EthernetMinimumSize)
	if opts.Observer != nil {
		r.observers.add(opts.Observer)
	}
	return &Endpoint{Endpoint: ethernet.New(r), raw: r}, nil
}

// RandomMAC returns a random locally administered unicast MAC address.
func RandomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	_, _ = rand.Read(mac)
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// AddObserver makes o see every frame from now on, beside the others,
// until remove is called (remove waits for no frame; o may see a frame
// that was on its way). It is safe while frames flow.
func (e *Endpoint) AddObserver(o Observer) (remove func()) {
	id := e.raw.observers.add(o)
	return sync.OnceFunc(func() { e.raw.observers.remove(id) })
}

// Stats returns the frame counters.
func (e *Endpoint) Stats() Stats { return e.raw.stats() }

// SetDivert sets a function that sees every frame read from the devices
// (without a virtio_net_hdr, after Options.Filter and the observers)
// before the stack does: a frame it returns true for is consumed, and
// the stack never sees it. It runs on the reader goroutines: it must not
// keep frame. Nil removes it.
func (e *Endpoint) SetDivert(f func(frame []byte) bool) {
	if f == nil {
		e.raw.divert.Store(nil)
		return
	}
	e.raw.divert.Store(&f)
}

// WriteFrame writes one Ethernet frame made outside the stack (the
// concatenation of bufs, at most one IP MTU of payload plus the Ethernet
// header, with its checksums complete) to the queue that hash picks,
// shown to the observers and counted as the stack's frames are. It is
// safe for concurrent use.
func (e *Endpoint) WriteFrame(hash uint32, bufs [][]byte) error {
	return e.raw.writeFrame(hash, bufs)
}

// Offload reports whether the devices carry a virtio_net_hdr: frames
// read then may have partial checksums, left to the receiver.
func (e *Endpoint) Offload() bool { return e.raw.vnet }

// Close closes the devices, which stops the reader goroutines. It is
// idempotent; Wait joins the readers.
func (e *Endpoint) Close() { e.raw.Close() }

// Failed is closed when a device failed for good: its reads fail with an
// error that says the device is gone (a TAP deleted under the endpoint
// reads EBADFD for ever). That device's reader has stopped; Err says
// why. The owner should close the endpoint.
func (e *Endpoint) Failed() <-chan struct{} { return e.raw.failed }

// Err returns the error that closed Failed, or nil.
func (e *Endpoint) Err() error {
	e.raw.mu.RLock()
	defer e.raw.mu.RUnlock()
	return e.raw.err
}

// rawEndpoint moves frames that include the Ethernet header; the
// ethernet.Endpoint around it parses and adds that header.
type rawEndpoint struct {
	devices   []Device
	observers observers
	addr      tcpip.LinkAddress
	vnet      bool          // frames carry a virtio_net_hdr
	mtu       atomic.Uint32 // frame MTU: IP MTU + 14

	logf    func(format string, args ...any)
	filter  func([]byte) bool
	failed  chan struct{} // closed with err set
	closing chan struct{} // closed by Close

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher // protected by mu
	started    bool                    // protected by mu
	closed     bool                    // protected by mu
	err        error                   // why failed is closed; protected by mu

	wg        sync.WaitGroup
	closeOnce sync.Once
	onClose   func()

	rxFrames, rxBytes, txFrames, txBytes atomic.Uint64
	rxErrors, txErrors, rxDropped        atomic.Uint64
	rxFiltered, rxDiverted               atomic.Uint64

	tx   txScratch // writeFrame's scratch, while txMu is held (getScratch)
	txMu sync.Mutex

	// divert, if set, takes frames before the stack (SetDivert).
	divert atomic.Pointer[func(frame []byte) bool]

	// readers are the reader goroutines running (startReaders); nil
	// until the first Attach. Protected by mu.
	readers *sync.WaitGroup
	// polled is the poll loop's reads, while one has them (Poll).
	polled atomic.Pointer[Reads]
	pollMu sync.Mutex // serializes poll and unpoll
}

var (
	_ stack.LinkEndpoint = (*rawEndpoint)(nil)
	_ stack.GSOEndpoint  = (*rawEndpoint)(nil)
)

func (e *rawEndpoint) MTU() uint32                      { return e.mtu.Load() }
func (e *rawEndpoint) SetMTU(mtu uint32)                { e.mtu.Store(mtu) }
func (e *rawEndpoint) MaxHeaderLength() uint16          { return 0 }
func (e *rawEndpoint) LinkAddress() tcpip.LinkAddress   { return e.addr }
func (e *rawEndpoint) SetLinkAddress(tcpip.LinkAddress) {}
func (e *rawEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	if e.vnet {
		// The kernel checks what it sends or leaves it partial on purpose.
		return stack.CapabilityRXChecksumOffload
	}
	return stack.CapabilityNone
}

// GSOMaxSize implements stack.GSOEndpoint.
func (e *rawEndpoint) GSOMaxSize() uint32 {
	if e.vnet {
		return GSOMaxSize
	}
	return 0
}

// SupportedGSO implements stack.GSOEndpoint: the host segments.
func (e *rawEndpoint) SupportedGSO() stack.SupportedGSO {
	if e.vnet {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}
func (e *rawEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }
func (e *rawEndpoint) AddHeader(*stack.PacketBuffer)           {}
func (e *rawEndpoint) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (e *rawEndpoint) SetOnCloseAction(f func()) {
	e.mu.Lock()
	e.onClose = f
	e.mu.Unlock()
}

// Attach implements stack.LinkEndpoint. The first non-nil dispatcher starts
// the readers; a nil dispatcher makes them drop frames.
func (e *rawEndpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dispatcher = d
	if d == nil || e.started || e.closed {
		return
	}
	e.started = true
	e.startReaders()
}

func (e *rawEndpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// Wait joins the reader goroutines. They stop once Close closed the devices.
func (e *rawEndpoint) Wait() { e.wg.Wait() }

// maxReadBackoff bounds the pause after a read error that repeats.
const maxReadBackoff = time.Second

// deviceGone says whether a read error means the device will never read
// again: a TAP whose interface was deleted reads EBADFD.
func deviceGone(err error) bool {
	return errors.Is(err, syscall.EBADFD) || errors.Is(err, syscall.ENODEV) ||
		errors.Is(err, syscall.ENXIO) || errors.Is(err, syscall.EBADF)
}

func (e *rawEndpoint) isClosed() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.closed
}

// fail records the first failure and closes failed.
func (e *rawEndpoint) fail(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err == nil {
		e.err = err
		close(e.failed)
	}
}

// Close runs the close action the stack registered (which removes the
// NIC), then closes every device: pending reads return and the readers
// exit. It is idempotent and may be re-entered by that action.
func (e *rawEndpoint) Close() {
	e.mu.Lock()
	if !e.closed {
		close(e.closing)
	}
	e.closed = true
	f := e.onClose
	e.onClose = nil
	e.mu.Unlock()
	if f != nil {
		f()
	}
	// A poll loop that reads the devices stops waiting on them before
	// they close (their numbers may then name other files).
	e.pollMu.Lock()
	r := e.polled.Swap(nil)
	if r != nil && r.unwatch != nil {
		r.unwatch(r.fds)
	}
	e.pollMu.Unlock()
	if r != nil {
		r.h.stop() // what the loop read for the stack goes to it first
	}
	e.closeOnce.Do(func() {
		for _, d := range e.devices {
			_ = d.Close()
		}
	})
}

// startReaders starts one reader goroutine per device; e.mu is held.
func (e *rawEndpoint) startReaders() {
	set := new(sync.WaitGroup)
	e.readers = set
	for i, dev := range e.devices {
		e.wg.Add(1)
		set.Add(1)
		go e.routineReadFromDevice(i, dev, set)
	}
}

// routineReadFromDevice is the one reader of device dev, until the
// endpoint closes or a poll loop takes the reads (Poll).
func (e *rawEndpoint) routineReadFromDevice(i int, dev Device, set *sync.WaitGroup) {
	defer e.wg.Done()
	defer set.Done()
	var backoff time.Duration
	logged := map[string]struct{}{}
	// One scratch buffer per reader; each frame is copied into a view of
	// its own size, so that a 60-byte ACK does not pin a 64 KiB chunk in
	// a receive queue (it did: 4 × the memory with 1000 idle connections
	// and a quarter of the connection rate, on an offloading TAP).
	var scratch []byte
	for {
		if e.polled.Load() != nil {
			return
		}
		size := e.frameSize()
		if len(scratch) != size {
			scratch = make([]byte, size)
		}
		n, err := dev.ReadFrame(scratch)
		if err != nil {
			if e.polled.Load() != nil {
				return
			}
			if errors.Is(err, net.ErrClosed) || e.isClosed() {
				return
			}
			e.rxErrors.Add(1)
			if deviceGone(err) {
				e.fail(fmt.Errorf("link: queue %d: the device is gone: %w", i, err))
				return
			}
			// Anything else may pass: log each kind once and back off,
			// so that an error that repeats cannot spin a CPU.
			if _, seen := logged[err.Error()]; !seen && len(logged) < 16 {
				logged[err.Error()] = struct{}{}
				if e.logf != nil {
					e.logf("link: read from queue %d: %v (retrying with back-off)", i, err)
				}
			}
			backoff = min(max(2*backoff, time.Millisecond), maxReadBackoff)
			select {
			case <-time.After(backoff):
			case <-e.closing:
				return
			}
			continue
		}
		backoff = 0
		e.handleFrame(scratch[:n], nil)
	}
}

// handleFrame takes one frame as read from a device (with its
// virtio_net_hdr, if the devices have one) to the filter, the
// observers, the divert function and the stack, or to h for the stack
// (h nil: straight to the stack); true if it went to the stack. It does
// not keep frame.
func (e *rawEndpoint) handleFrame(frame []byte, h *handoff) bool {
	n := len(frame)
	if e.vnet {
		if n < vnetHdrSize {
			e.rxErrors.Add(1)
			return false
		}
		frame = frame[vnetHdrSize:]
		n -= vnetHdrSize
	}
	if n < header.EthernetMinimumSize {
		e.rxErrors.Add(1)
		return false
	}
	if e.filter != nil && !e.filter(frame) {
		e.rxFiltered.Add(1)
		return false
	}
	e.rxFrames.Add(1)
	e.rxBytes.Add(uint64(n))
	if obs := e.observers.list(); obs != nil {
		for _, o := range *obs {
			o.ObserveFrame(Inbound, frame)
		}
	}
	if dv := e.divert.Load(); dv != nil && (*dv)(frame) {
		e.rxDiverted.Add(1)
		return false
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		Payload: buffer.MakeWithView(buffer.NewViewWithData(frame)),
	})
	if h != nil {
		h.push(e, pkt)
		return true
	}
	return e.deliver(pkt)
}

// deliver hands pkt to the stack and drops the caller's reference; false
// if no stack is attached (the packet is dropped).
func (e *rawEndpoint) deliver(pkt *stack.PacketBuffer) bool {
	defer pkt.DecRef()
	e.mu.RLock()
	d := e.dispatcher
	e.mu.RUnlock()
	if d == nil {
		e.rxDropped.Add(1)
		return false
	}
	d.DeliverNetworkPacket(0, pkt)
	return true
}

// txScratch is what a write needs besides the packet: the vnet header and
// the iovec, reused so that sending allocates nothing per packet.
type txScratch struct {
	hdr  [vnetHdrSize]byte
	bufs [][]byte
}

var txScratchPool = sync.Pool{New: func() any { return &txScratch{bufs: make([][]byte, 0, 8)} }}

// getScratch is a txScratch for one write: the endpoint's own, when no
// other write holds it (one writer after another, as the flow engine's
// frames are, touches the same memory each time), else one of the pool.
func (e *rawEndpoint) getScratch() *txScratch {
	if e.txMu.TryLock() {
		return &e.tx
	}
	return txScratchPool.Get().(*txScratch)
}

// putScratch gives back what getScratch gave.
func (e *rawEndpoint) putScratch(s *txScratch) {
	clear(s.bufs[:cap(s.bufs)]) // drop every reference to the frames
	if s == &e.tx {
		e.txMu.Unlock()
		return
	}
	txScratchPool.Put(s)
}

// appendSlices appends the packet's bytes, headers first, as slices of
// its views (pkt.AsSlices without the allocation).
func appendSlices(bufs [][]byte, pkt *stack.PacketBuffer) [][]byte {
	vl, off := pkt.AsViewList()
	for v := vl.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		bufs = append(bufs, b[off:])
		off = 0
	}
	return bufs
}

// WritePackets implements stack.LinkWriter: one frame per packet, on the
// queue chosen by the packet's flow hash. The caller keeps its references.
func (e *rawEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	scratch := txScratchPool.Get().(*txScratch)
	defer func() {
		clear(scratch.bufs[:cap(scratch.bufs)]) // drop every reference to the packets' views
		txScratchPool.Put(scratch)
	}()
	n := 0
	var firstErr tcpip.Error
	for _, pkt := range pkts.AsSlice() {
		dev := e.devices[0]
		if len(e.devices) > 1 {
			dev = e.devices[pkt.Hash%uint32(len(e.devices))]
		}
		bufs := scratch.bufs[:0]
		if e.vnet {
			gsoHeader(pkt, scratch.hdr[:])
			bufs = append(bufs, scratch.hdr[:])
		}
		bufs = appendSlices(bufs, pkt)
		scratch.bufs = bufs
		if obs := e.observers.list(); obs != nil {
			v := pkt.ToView()
			for _, o := range *obs {
				o.ObserveFrame(Outbound, v.AsSlice())
			}
			v.Release()
		}
		if err := dev.WriteFrame(bufs); err != nil {
			e.txErrors.Add(1)
			if firstErr == nil {
				if errors.Is(err, net.ErrClosed) {
					firstErr = &tcpip.ErrClosedForSend{}
				} else {
					firstErr = &tcpip.ErrAborted{}
				}
			}
			continue
		}
		size := uint64(pkt.Size())
		e.txFrames.Add(1)
		e.txBytes.Add(size)
		n++
	}
	if n == 0 && firstErr != nil {
		return 0, firstErr
	}
	return n, nil
}

func (e *rawEndpoint) stats() Stats {
	return Stats{
		RxFrames:   e.rxFrames.Load(),
		RxBytes:    e.rxBytes.Load(),
		TxFrames:   e.txFrames.Load(),
		TxBytes:    e.txBytes.Load(),
		RxErrors:   e.rxErrors.Load(),
		TxErrors:   e.txErrors.Load(),
		RxDropped:  e.rxDropped.Load(),
		RxFiltered: e.rxFiltered.Load(),
		RxDiverted: e.rxDiverted.Load(),
		Polled:     e.polled.Load() != nil,
	}
}

// observers is a set of Observers that the frame paths read without a
// lock: a copy-on-write list. Each addition has its own id, so that the
// same Observer (or one of a type that == cannot compare) may be added
// more than once.
type observers struct {
	mu   sync.Mutex
	ids  []int                      // of cur's entries; protected by mu
	next int                        // protected by mu
	cur  atomic.Pointer[[]Observer] // nil when empty
}

func (s *observers) list() *[]Observer { return s.cur.Load() }

func (s *observers) add(o Observer) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next []Observer
	if cur := s.cur.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, o)
	s.next++
	s.ids = append(s.ids, s.next)
	s.cur.Store(&next)
	return s.next
}

func (s *observers) remove(id int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if cur == nil {
		return
	}
	var next []Observer
	var ids []int
	for i, x := range *cur {
		if s.ids[i] != id {
			next = append(next, x)
			ids = append(ids, s.ids[i])
		}
	}
	s.ids = ids
	if len(next) == 0 {
		s.cur.Store(nil)
		return
	}
	s.cur.Store(&next)
}

// writeFrame is Endpoint.WriteFrame: a zero virtio_net_hdr first where
// the devices need one (no segmentation, checksums complete).
func (e *rawEndpoint) writeFrame(hash uint32, frame [][]byte) error {
	dev := e.devices[0]
	if len(e.devices) > 1 {
		dev = e.devices[hash%uint32(len(e.devices))]
	}
	scratch := e.getScratch()
	defer e.putScratch(scratch)
	bufs := scratch.bufs[:0]
	if e.vnet {
		clear(scratch.hdr[:])
		bufs = append(bufs, scratch.hdr[:])
	}
	size := 0
	for _, b := range frame {
		size += len(b)
	}
	bufs = append(bufs, frame...)
	scratch.bufs = bufs
	if obs := e.observers.list(); obs != nil {
		var flat []byte
		if len(frame) == 1 {
			flat = frame[0]
		} else {
			flat = make([]byte, 0, size)
			for _, b := range frame {
				flat = append(flat, b...)
			}
		}
		for _, o := range *obs {
			o.ObserveFrame(Outbound, flat)
		}
	}
	if err := dev.WriteFrame(bufs); err != nil {
		e.txErrors.Add(1)
		return err
	}
	e.txFrames.Add(1)
	e.txBytes.Add(uint64(size))
	return nil
}
