package link

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/internal/nbio"
)

// TAPConfig describes a TAP device to create. The zero value of each field
// is its default.
type TAPConfig struct {
	// Name is the interface name. Empty lets the kernel pick (tapN).
	Name string
	// Queues is the number of queues; more than one makes a multiqueue
	// TAP with one Device per queue. Zero means one.
	Queues int
	// MTU is the IP MTU of the kernel side. Zero means DefaultMTU.
	MTU int
	// MAC is the kernel side's address. Nil leaves the kernel's random one.
	MAC net.HardwareAddr
	// Offload opens the queues with IFF_VNET_HDR and turns on checksum
	// offload and TSO (see vnet.go); the Endpoint must then be built with
	// Options.VnetHdr. Without it the TAP is opened with water.
	Offload bool
}

// TAP is a TAP device created in the calling thread's network namespace.
// The device lives as long as one of its queues is open (persist is off),
// so closing every queue removes it, wherever it has been moved since.
type TAP struct {
	name    string
	index   int
	queues  []*tapQueue
	offload bool
}

// ErrNoTUN is wrapped by OpenTAP's error when /dev/net/tun is missing.
var ErrNoTUN = errors.New("/dev/net/tun is missing (load the tun module or run in a container that exposes it)")

// ErrNotPermitted is wrapped by OpenTAP's error when the caller may not
// create a TAP device.
var ErrNotPermitted = errors.New("creating a TAP device needs CAP_NET_ADMIN (run as root or inside a user namespace you own) and read/write access to /dev/net/tun")

// OpenTAP creates a TAP device with water, makes its descriptors
// close-on-exec, and sets its MTU and MAC with netlink. It leaves the link
// down: bringing it up is the business of whoever configures its namespace.
func OpenTAP(cfg TAPConfig) (*TAP, error) {
	queues := cfg.Queues
	if queues <= 0 {
		queues = 1
	}
	if len(cfg.Name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("open TAP %q: name longer than %d bytes", cfg.Name, unix.IFNAMSIZ-1)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < 68 || mtu > MaxMTU {
		return nil, fmt.Errorf("open TAP %q: MTU %d out of range 68..%d", cfg.Name, mtu, MaxMTU)
	}
	t := &TAP{name: cfg.Name, offload: cfg.Offload}
	open := openQueue
	if cfg.Offload {
		open = openOffloadQueue
	}
	for i := 0; i < queues; i++ {
		q, name, err := open(t.name, queues > 1)
		if err != nil {
			t.Close()
			return nil, tapError(cfg.Name, err)
		}
		t.name = name
		t.queues = append(t.queues, q)
	}
	l, err := netlink.LinkByName(t.name)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("open TAP %s: %w", t.name, err)
	}
	t.index = l.Attrs().Index
	if err := netlink.LinkSetMTU(l, mtu); err != nil {
		t.Close()
		return nil, fmt.Errorf("open TAP %s: set MTU %d: %w", t.name, mtu, err)
	}
	if cfg.MAC != nil {
		if err := netlink.LinkSetHardwareAddr(l, cfg.MAC); err != nil {
			t.Close()
			return nil, fmt.Errorf("open TAP %s: set MAC %v: %w", t.name, cfg.MAC, err)
		}
	}
	return t, nil
}

func tapError(name string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENODEV):
		return fmt.Errorf("open TAP %q: %w: %w", name, ErrNoTUN, err)
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("open TAP %q: %w: %w", name, ErrNotPermitted, err)
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("open TAP %q: the name is taken by a device in use: %w", name, err)
	}
	return fmt.Errorf("open TAP %q: %w", name, err)
}

// openQueue opens one queue with water. Water opens /dev/net/tun without
// O_CLOEXEC; holding ForkLock until the flag is set keeps a concurrent
// fork/exec from inheriting the descriptor.
func openQueue(name string, multi bool) (*tapQueue, string, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	ifce, err := water.New(water.Config{
		DeviceType: water.TAP,
		PlatformSpecificParams: water.PlatformSpecificParams{
			Name:       name,
			MultiQueue: multi,
		},
	})
	if err != nil {
		return nil, "", err
	}
	f, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		_ = ifce.Close()
		return nil, "", fmt.Errorf("water returned %T, not *os.File", ifce.ReadWriteCloser)
	}
	q, err := newTapQueue(f)
	if err != nil {
		_ = f.Close()
		return nil, "", err
	}
	return q, ifce.Name(), nil
}

// TAPFromFd adopts a TAP queue descriptor opened elsewhere (for example
// inside a user namespace, and passed over a unix socket). The TAP owns fd
// from then on.
func TAPFromFd(fd int, name string, offload bool) (*TAP, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("adopt TAP fd %d: %w", fd, err)
	}
	f := os.NewFile(uintptr(fd), "tap")
	if f == nil {
		return nil, fmt.Errorf("adopt TAP fd %d: invalid descriptor", fd)
	}
	q, err := newTapQueue(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("adopt TAP fd %d: %w", fd, err)
	}
	return &TAP{name: name, queues: []*tapQueue{q}, offload: offload}, nil
}

// Offload reports whether the queues carry virtio_net_hdr (Options.VnetHdr).
func (t *TAP) Offload() bool { return t.offload }

// Fds returns the queues' descriptors, to pass them to another process
// (they stay owned by the TAP).
func (t *TAP) Fds() []int {
	var fds []int
	for _, q := range t.queues {
		if fd, err := q.cur.Load().fd(); err == nil {
			fds = append(fds, fd)
		}
	}
	return fds
}

// Name returns the interface name.
func (t *TAP) Name() string { return t.name }

// Index returns the interface index in the namespace it was created in.
func (t *TAP) Index() int { return t.index }

// Devices returns one Device per queue. An Endpoint built on them owns them.
func (t *TAP) Devices() []Device {
	ds := make([]Device, len(t.queues))
	for i, q := range t.queues {
		ds[i] = q
	}
	return ds
}

// Close closes every queue; with the last one the kernel removes the
// device. It is idempotent.
func (t *TAP) Close() error {
	var first error
	for _, q := range t.queues {
		if err := q.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// tapQueue is one queue of a TAP. It uses the descriptor through an
// *os.File and its RawConn only, never Fd(), so that Close unblocks a
// pending read and no call uses a descriptor number after Close. The
// file is the one water made, in Go's poller, until a poll loop takes
// the reads (detach): then a file of the same open file description
// outside Go's poller, whose readiness wakes no thread but the loop's.
type tapQueue struct {
	cur    atomic.Pointer[tapFile]
	mu     sync.Mutex  // serializes detach, attach and Close
	closed atomic.Bool // set by Close

	// ReadFrame's state: it has one caller at a time, and its callback
	// is made once (a closure per call cost an allocation per frame).
	rd     nbio.Reader
	rbuf   []byte
	rn     int
	rerr   error
	readFn func(uintptr) bool

	// readNow's state (Poll), the same way.
	prd    nbio.Reader
	pbuf   []byte
	pn     int
	perr   error
	pollFn func(uintptr)

	// WriteFrame's callback and state when no other write holds wmu (one
	// writer after another touches the same memory each time), else one
	// of writeCalls.
	w   writeCall
	wmu sync.Mutex
}

// tapFile is a queue's descriptor as a file: in Go's poller (polled
// false) or not.
type tapFile struct {
	f      *os.File
	rc     syscall.RawConn
	polled bool // outside Go's poller, read by a poll loop
}

func newTapFile(f *os.File, polled bool) (*tapFile, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &tapFile{f: f, rc: rc, polled: polled}, nil
}

func newTapQueue(f *os.File) (*tapQueue, error) {
	tf, err := newTapFile(f, false)
	if err != nil {
		return nil, err
	}
	var cerr error
	if err := tf.rc.Control(func(fd uintptr) {
		unix.CloseOnExec(int(fd))
		cerr = unix.SetNonblock(int(fd), true)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, cerr
	}
	q := &tapQueue{}
	q.cur.Store(tf)
	q.readFn = q.readOnce
	q.pollFn = q.readPolled
	q.w.fn = q.w.write
	return q, nil
}

// ReadFrame implements Device. The read and write calls go through
// nbio: see there why.
func (q *tapQueue) ReadFrame(b []byte) (int, error) {
	q.rbuf = b
	err := q.cur.Load().rc.Read(q.readFn)
	n, rerr := q.rn, q.rerr
	q.rbuf, q.rerr = nil, nil
	switch {
	case q.gone(err):
		return 0, errClosed
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, os.NewSyscallError("read", rerr)
	}
	return n, nil
}

// readOnce is ReadFrame's callback: false asks the poller to wait.
func (q *tapQueue) readOnce(fd uintptr) bool {
	q.rn, q.rerr = q.rd.Read(int(fd), q.rbuf)
	return q.rerr != unix.EAGAIN
}

// WriteFrame implements Device with one writev per frame.
func (q *tapQueue) WriteFrame(bufs [][]byte) error {
	w := &q.w
	if !q.wmu.TryLock() {
		w = writeCalls.Get().(*writeCall)
	}
	w.bufs = bufs
	var err error
	for {
		tf := q.cur.Load()
		w.polled = tf.polled
		err = tf.rc.Write(w.fn)
		// A file replaced meanwhile (detach, attach) was closed: the
		// frame goes to the new one.
		if err == nil || q.closed.Load() || q.cur.Load() == tf {
			break
		}
	}
	werr := w.err
	w.bufs, w.err = nil, nil
	if w == &q.w {
		q.wmu.Unlock()
	} else {
		writeCalls.Put(w)
	}
	if q.gone(err) {
		return errClosed
	}
	if err != nil {
		return err
	}
	return werr
}

// writeCall is one WriteFrame's callback and its state, reused through
// writeCalls (writers may be concurrent): a closure per call cost an
// allocation per frame.
type writeCall struct {
	bufs   [][]byte
	err    error
	polled bool // the file is outside Go's poller: wait with poll(2)
	fn     func(uintptr) bool
}

var writeCalls = sync.Pool{New: func() any {
	w := &writeCall{}
	w.fn = w.write
	return w
}}

// write is the callback: false asks the poller to wait for room. A file
// outside the poller waits for room in poll(2) (a TAP rarely lacks it).
func (w *writeCall) write(fd uintptr) bool {
	for {
		_, w.err = nbio.Writev(int(fd), w.bufs)
		if w.err != unix.EAGAIN {
			return true
		}
		if !w.polled {
			return false
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(pfd, 1000); err != nil && err != unix.EINTR {
			w.err = err
			return true
		}
	}
}

// gone says whether err, from the RawConn, comes from Close (a pending
// call ends with the poller's "use of closed file", a later one with
// os.ErrClosed).
func (q *tapQueue) gone(err error) bool {
	return err != nil && (q.closed.Load() || errors.Is(err, os.ErrClosed))
}

// Close implements Device.
func (q *tapQueue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed.Store(true)
	err := q.cur.Load().f.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// reopen replaces the queue's file with one of the same open file
// description, in Go's poller or not (polled), and returns its
// descriptor. Closing the old file takes it out of Go's poller (the
// file description stays open through the new one); calls on it that
// are under way finish first.
func (q *tapQueue) reopen(polled bool) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed.Load() {
		return -1, errClosed
	}
	old := q.cur.Load()
	if old.polled == polled {
		return old.fd()
	}
	nfd := -1
	var derr error
	if err := old.rc.Control(func(fd uintptr) {
		syscall.ForkLock.RLock()
		defer syscall.ForkLock.RUnlock()
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	// os.NewFile puts a descriptor in Go's poller if it is non-blocking
	// then. O_NONBLOCK belongs to the file description, which the old
	// file shares: it is off only for this instant, and the old file's
	// reads are stopped and its writes do not block on a TAP.
	if polled {
		if err := unix.SetNonblock(nfd, false); err != nil {
			unix.Close(nfd)
			return -1, err
		}
	}
	f := os.NewFile(uintptr(nfd), old.f.Name())
	if polled {
		if err := unix.SetNonblock(nfd, true); err != nil {
			f.Close()
			return -1, err
		}
	}
	tf, err := newTapFile(f, polled)
	if err != nil {
		f.Close()
		return -1, err
	}
	q.cur.Store(tf)
	_ = old.f.Close()
	return nfd, nil
}

// fd is tf's descriptor.
func (tf *tapFile) fd() (int, error) {
	fd := -1
	if err := tf.rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}
