package link_test

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tapstack/tapstack/link"
)

// scriptedDevice fails every read with errs(n) (n counts reads from 1)
// until errs returns nil, then blocks until Close.
type scriptedDevice struct {
	errs   func(n int) error
	reads  atomic.Int32
	closed chan struct{}
	once   sync.Once
}

func newScripted(errs func(int) error) *scriptedDevice {
	return &scriptedDevice{errs: errs, closed: make(chan struct{})}
}

func (d *scriptedDevice) ReadFrame(b []byte) (int, error) {
	n := int(d.reads.Add(1))
	if err := d.errs(n); err != nil {
		return 0, err
	}
	<-d.closed
	return 0, net.ErrClosed
}

func (d *scriptedDevice) WriteFrame([][]byte) error { return nil }
func (d *scriptedDevice) Close() error              { d.once.Do(func() { close(d.closed) }); return nil }

// nopDispatcher takes frames and drops them.
type nopDispatcher struct{}

func (nopDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}
func (nopDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)    {}

func TestReaderStopsWhenTheDeviceIsGone(t *testing.T) {
	dev := newScripted(func(int) error { return syscall.EBADFD })
	ep, err := link.New(link.Options{Devices: []link.Device{dev}})
	if err != nil {
		t.Fatal(err)
	}
	ep.Attach(nopDispatcher{})
	select {
	case <-ep.Failed():
	case <-time.After(2 * time.Second):
		t.Fatal("Failed not closed after EBADFD")
	}
	if !errors.Is(ep.Err(), syscall.EBADFD) {
		t.Fatalf("Err = %v", ep.Err())
	}
	time.Sleep(100 * time.Millisecond)
	if n := dev.reads.Load(); n != 1 {
		t.Fatalf("%d reads after the device was gone, want 1 (the reader must stop)", n)
	}
	ep.Close()
	ep.Wait()
}

func TestReaderBacksOffOnRepeatedErrors(t *testing.T) {
	start := time.Now()
	dev := newScripted(func(int) error {
		if time.Since(start) < 500*time.Millisecond {
			return syscall.EIO
		}
		return nil
	})
	var logs atomic.Int32
	ep, err := link.New(link.Options{Devices: []link.Device{dev}, Logf: func(string, ...any) { logs.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	ep.Attach(nopDispatcher{})
	time.Sleep(700 * time.Millisecond)
	if n := dev.reads.Load(); n > 20 || n < 3 {
		t.Fatalf("%d reads in 700 ms of EIO: want a handful (backing off, not spinning, not stopped)", n)
	}
	if n := logs.Load(); n != 1 {
		t.Fatalf("%d log lines for one kind of error, want 1", n)
	}
	select {
	case <-ep.Failed():
		t.Fatal("a transient error failed the link")
	default:
	}
	ep.Close()
	ep.Wait()
}

// TestDeletedTAPFailsTheLink: deleting the TAP interface under a running
// endpoint closes Failed (it once made the reader spin on EBADFD).
func TestDeletedTAPFailsTheLink(t *testing.T) {
	ep, l := tapEndpoint(t, "tsdel")
	name := l.Attrs().Name
	ep.Attach(nopDispatcher{})
	time.Sleep(50 * time.Millisecond)
	if err := netlink.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ep.Failed():
		t.Logf("failed: %v", ep.Err())
	case <-time.After(time.Second):
		t.Fatalf("deleting %s did not fail the link within a second (stats %+v)", name, ep.Stats())
	}
}

// tapEndpoint opens a TAP named prefix and a number, up, and an endpoint
// on it, closed when the test ends.
func tapEndpoint(t *testing.T, prefix string) (*link.Endpoint, netlink.Link) {
	t.Helper()
	requireTUN(t)
	name := fmt.Sprintf("%s%d", prefix, time.Now().UnixNano()%100000)
	tap, err := link.OpenTAP(link.TAPConfig{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := link.New(link.Options{Devices: tap.Devices()})
	if err != nil {
		tap.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close(); ep.Wait() })
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	return ep, l
}
