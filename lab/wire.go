package lab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/link"
)

// wire joins two TAP devices, tapA in node a and tapB in node b, with two
// pump goroutines. A link.Impair wraps each TAP's device and impairs what
// is written to it, so that a change of impairment applies to the very
// next frame each way: impB the frames from a to b, impA those from b to
// a. A capture observes tapA's device under impA: the frames as a's
// interface sees them.
type wire struct {
	tapA, tapB *link.TAP
	obs        *observed
	impA, impB *link.Impair
	seed       int64
	mtu        int
	wg         sync.WaitGroup
	once       sync.Once
}

// makeWire opens a TAP in each node (named as the port) and the impaired
// devices over them.
func (l *Link) makeWire(mtu int, spec link.ImpairSpec) error {
	w := &wire{mtu: mtu, seed: l.net.seed + int64(l.index)}
	l.w = w
	var err error
	if w.tapA, err = openTAPIn(l.a.node, l.a.iface, mtu); err != nil {
		return err
	}
	if w.tapB, err = openTAPIn(l.b.node, l.b.iface, mtu); err != nil {
		return err
	}
	w.obs = &observed{dev: w.tapA.Devices()[0]}
	w.impA = link.NewImpair(w.obs, link.ImpairSpec{}, link.ImpairOptions{Seed: w.seed})
	w.impB = link.NewImpair(w.tapB.Devices()[0], link.ImpairSpec{}, link.ImpairOptions{Seed: w.seed ^ 0x2545f491})
	w.set(spec)
	return nil
}

// set impairs the wire as spec says, seen from a: Out what a sends, In
// what it receives.
func (w *wire) set(spec link.ImpairSpec) {
	w.impB.Set(link.ImpairSpec{Out: spec.Out})
	w.impA.Set(link.ImpairSpec{Out: spec.In})
}

// stats counts what each direction did.
func (w *wire) stats() (aToB, bToA link.ImpairStats) {
	_, aToB = w.impB.Stats()
	_, bToA = w.impA.Stats()
	return aToB, bToA
}

// openTAPIn opens a plain TAP named name inside nd.
func openTAPIn(nd *Node, name string, mtu int) (*link.TAP, error) {
	var t *link.TAP
	err := nd.ns.Do(func() (err error) {
		t, err = link.OpenTAP(link.TAPConfig{Name: name, MTU: mtu})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("TAP %s in %s: %w", name, nd.name, err)
	}
	return t, nil
}

// start runs the pumps.
func (w *wire) start(logf func(string, ...any)) {
	w.wg.Add(2)
	go w.pump("a→b", w.impA, w.impB, logf)
	go w.pump("b→a", w.impB, w.impA, logf)
}

// pump moves frames from src to dst until src is closed. A frame dst
// refuses (its interface down) is lost, as on a real wire.
func (w *wire) pump(dir string, src, dst link.Device, logf func(string, ...any)) {
	defer w.wg.Done()
	buf := make([]byte, w.mtu+64)
	for {
		n, err := src.ReadFrame(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) && !errors.Is(err, net.ErrClosed) {
				logf("wire %s: %v", dir, err)
			}
			return
		}
		_ = dst.WriteFrame([][]byte{buf[:n]})
	}
}

// close stops the pumps and closes both TAPs, which removes them. It is
// idempotent.
func (w *wire) close() error {
	var err error
	w.once.Do(func() {
		var errs []error
		for i, imp := range []*link.Impair{w.impA, w.impB} {
			tap := []*link.TAP{w.tapA, w.tapB}[i]
			if imp != nil {
				errs = append(errs, imp.Close()) // and the TAP's device
			} else if tap != nil {
				errs = append(errs, tap.Close())
			}
		}
		w.wg.Wait()
		err = errors.Join(errs...)
	})
	return err
}

// observed is a Device whose frames, both ways, a capture may see.
type observed struct {
	dev link.Device
	p   atomic.Pointer[link.Pcap]
}

func (o *observed) ReadFrame(b []byte) (int, error) {
	n, err := o.dev.ReadFrame(b)
	if err == nil {
		if p := o.p.Load(); p != nil {
			p.ObserveFrame(link.Outbound, b[:n])
		}
	}
	return n, err
}

func (o *observed) WriteFrame(bufs [][]byte) error {
	if p := o.p.Load(); p != nil {
		if len(bufs) == 1 {
			p.ObserveFrame(link.Inbound, bufs[0])
		} else {
			var f []byte
			for _, b := range bufs {
				f = append(f, b...)
			}
			p.ObserveFrame(link.Inbound, f)
		}
	}
	return o.dev.WriteFrame(bufs)
}

func (o *observed) Close() error { return o.dev.Close() }

var _ link.Device = (*observed)(nil)

// sniffer captures a veth end's frames with a packet socket inside its
// node.
type sniffer struct {
	f    *os.File
	done chan struct{}
}

// ethPAll is ETH_P_ALL in network byte order.
const ethPAll = uint16(unix.ETH_P_ALL<<8&0xff00 | unix.ETH_P_ALL>>8)

func startSniffer(nd *Node, ifindex int, p *link.Pcap) (*sniffer, error) {
	var fd int
	err := nd.ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(ethPAll))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: ethPAll, Ifindex: ifindex}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s := &sniffer{f: os.NewFile(uintptr(fd), "packet"), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, link.DefaultSnaplen)
		for {
			n, err := s.f.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) {
					return
				}
				// A transient error (ENETDOWN while the link is
				// down): wait a little rather than spin.
				time.Sleep(10 * time.Millisecond)
				continue
			}
			p.ObserveFrame(link.Inbound, buf[:n])
		}
	}()
	return s, nil
}

// close stops the capture and waits for its goroutine.
func (s *sniffer) close() {
	s.f.Close()
	<-s.done
}
