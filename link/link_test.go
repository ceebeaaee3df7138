package link_test

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/link"

	"github.com/tapstack/tapstack/internal/cienv"
)

func TestPipeCarriesFramesAndCloseUnblocks(t *testing.T) {
	a, b := link.Pipe()
	if err := a.WriteFrame([][]byte{[]byte("hello "), []byte("world")}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, err := b.ReadFrame(buf)
	if err != nil || string(buf[:n]) != "hello world" {
		t.Fatalf("ReadFrame = %q, %v", buf[:n], err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := b.ReadFrame(buf)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	b.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadFrame after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock ReadFrame")
	}
	if err := b.WriteFrame([][]byte{{1}}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteFrame after Close: %v", err)
	}
	// Frames towards a closed end are dropped, not an error for the sender.
	if err := a.WriteFrame([][]byte{{1}}); err != nil {
		t.Fatalf("WriteFrame towards a closed end: %v", err)
	}
	b.Close() // idempotent
}

func TestNewRejectsBadOptions(t *testing.T) {
	a, _ := link.Pipe()
	for _, o := range []link.Options{
		{},
		{Devices: []link.Device{a}, MTU: 20},
		{Devices: []link.Device{a}, MTU: 70000},
		{Devices: []link.Device{a}, Address: net.HardwareAddr{1, 0, 0, 0, 0, 1}},
	} {
		if _, err := link.New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	if mac := link.RandomMAC(); mac[0]&1 != 0 || mac[0]&2 == 0 {
		t.Errorf("RandomMAC %v is not locally administered unicast", mac)
	}
}

func requireTUN(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		cienv.Skip(t, "link: skipped: creating a TAP needs root (CAP_NET_ADMIN)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		cienv.Skip(t, "link: skipped: needs /dev/net/tun")
	}
}

func TestTAPOpenConfigureClose(t *testing.T) {
	requireTUN(t)
	mac := net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
	name := "tstl" + time.Now().Format("150405")
	tap, err := link.OpenTAP(link.TAPConfig{Name: name, Queues: 2, MTU: 9000, MAC: mac})
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().MTU != 9000 || l.Attrs().HardwareAddr.String() != mac.String() {
		t.Fatalf("TAP has MTU %d and MAC %v, want 9000 and %v", l.Attrs().MTU, l.Attrs().HardwareAddr, mac)
	}
	devs := tap.Devices()
	if len(devs) != 2 {
		t.Fatalf("%d queues, want 2", len(devs))
	}
	// Every queue's descriptor is close-on-exec.
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, e := range fds {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		if target != "/dev/net/tun" {
			continue
		}
		var fd int
		for _, c := range e.Name() {
			fd = fd*10 + int(c-'0')
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err == nil && flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("TAP fd %d is not close-on-exec", fd)
		}
	}
	errc := make(chan error, 2)
	buf := make([]byte, 2000)
	for _, d := range devs {
		go func() {
			_, err := d.ReadFrame(make([]byte, len(buf)))
			errc <- err
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	for range devs {
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("pending read after Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Close did not unblock a pending read")
		}
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Fatal("the TAP still exists after Close")
	}
	if err := tap.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestOpenTAPErrors(t *testing.T) {
	if _, err := link.OpenTAP(link.TAPConfig{Name: "a-name-that-is-far-too-long"}); err == nil {
		t.Error("a 27-byte name was accepted")
	}
	if _, err := link.OpenTAP(link.TAPConfig{Name: "x", MTU: 10}); err == nil {
		t.Error("MTU 10 was accepted")
	}
}

func TestTAPWithOffloads(t *testing.T) {
	requireTUN(t)
	name := "tsto" + time.Now().Format("150405")
	tap, err := link.OpenTAP(link.TAPConfig{Name: name, Offload: true})
	if err != nil {
		t.Fatal(err)
	}
	if !tap.Offload() || tap.Name() != name {
		t.Fatalf("Offload() = %v, Name() = %q", tap.Offload(), tap.Name())
	}
	ep, err := link.New(link.Options{Devices: tap.Devices(), VnetHdr: true})
	if err != nil {
		t.Fatal(err)
	}
	if ep.GSOMaxSize() != link.GSOMaxSize {
		t.Fatalf("GSOMaxSize = %d", ep.GSOMaxSize())
	}
	ep.Close()
	if _, err := netlink.LinkByName(name); err == nil {
		t.Fatal("the TAP still exists after Close")
	}
}

// TestTAPFramesAllocateNothing reads frames that an AF_PACKET socket
// sends out of the TAP's interface (nothing leaves the TAP): the read
// path makes no allocation per frame, nor does the write path.
func TestTAPFramesAllocateNothing(t *testing.T) {
	requireTUN(t)
	name := "tsta" + time.Now().Format("150405")
	tap, err := link.OpenTAP(link.TAPConfig{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	const ethP = 0x88b5 // local experimental EtherType
	ps, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(ethP)))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ps)
	if err := unix.Bind(ps, &unix.SockaddrLinklayer{Protocol: htons(ethP), Ifindex: l.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 60)
	copy(frame, []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, ethP >> 8, ethP & 0xff})
	dev := tap.Devices()[0]
	buf := make([]byte, 2000)
	readOne := func() {
		if _, err := unix.Write(ps, frame); err != nil {
			t.Fatal(err)
		}
		if n, err := dev.ReadFrame(buf); err != nil || n < 14 {
			t.Fatalf("ReadFrame: %d, %v", n, err)
		}
	}
	readOne()
	if allocs := testing.AllocsPerRun(200, readOne); allocs != 0 {
		t.Fatalf("%v allocations per frame read, want 0", allocs)
	}
	// Frames written to the TAP arrive at the interface, and the packet
	// socket sees them.
	bufs := [][]byte{frame[:14], frame[14:]}
	writeOne := func() {
		if err := dev.WriteFrame(bufs); err != nil {
			t.Fatal(err)
		}
		if n, err := unix.Read(ps, buf); err != nil || n != len(frame) {
			t.Fatalf("packet socket read: %d, %v", n, err)
		}
	}
	writeOne()
	if allocs := testing.AllocsPerRun(200, writeOne); allocs != 0 {
		t.Fatalf("%v allocations per frame written, want 0", allocs)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
