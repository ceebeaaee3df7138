package link

import (
	"encoding/binary"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// With offloads on, every frame on a TAP queue starts with a
// virtio_net_hdr (10 bytes, host byte order): the kernel hands over and
// accepts TCP segments of up to 64 KiB whose checksum is left to the
// receiver (GSO/TSO both ways, checksum offload).
const vnetHdrSize = 10

// virtio_net_hdr values.
const (
	vnetFlagNeedsCsum = 1
	vnetGSONone       = 0
	vnetGSOTCPv4      = 1
	vnetGSOTCPv6      = 4
)

// GSOMaxSize is the largest segment handed to or taken from an offloading
// TAP.
const GSOMaxSize = 1 << 16

// vnetHdr is a decoded virtio_net_hdr.
type vnetHdr struct {
	flags, gsoType                         uint8
	hdrLen, gsoSize, csumStart, csumOffset uint16
}

func (h *vnetHdr) encode(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

// gsoHeader builds the virtio_net_hdr of an outbound packet from gVisor's
// GSO options: a large TCP segment is marked for segmentation by the
// kernel, a partial checksum for completion.
func gsoHeader(pkt *stack.PacketBuffer, b []byte) {
	var h vnetHdr
	if g := pkt.GSOOptions; g.Type != stack.GSONone {
		h.hdrLen = uint16(pkt.HeaderSize())
		if g.NeedsCsum {
			h.flags = vnetFlagNeedsCsum
			h.csumStart = header.EthernetMinimumSize + g.L3HdrLen
			h.csumOffset = g.CsumOffset
		}
		if uint16(pkt.Data().Size()) > g.MSS {
			switch g.Type {
			case stack.GSOTCPv4:
				h.gsoType = vnetGSOTCPv4
			case stack.GSOTCPv6:
				h.gsoType = vnetGSOTCPv6
			}
			h.gsoSize = g.MSS
		}
	}
	h.encode(b)
}

// TUN ioctls and flags not in x/sys/unix under these names.
const (
	iffVnetHdr    = 0x4000
	tunFCsum      = 0x01
	tunFTSO4      = 0x02
	tunFTSO6      = 0x04
	tunSetVnetHdr = 0x400454d8 // TUNSETVNETHDRSZ
)

// openOffloadQueue opens one TAP queue with IFF_VNET_HDR and turns on
// checksum offload and TSO for IPv4 and IPv6. Water cannot set
// IFF_VNET_HDR, so this path opens /dev/net/tun itself (close-on-exec and
// non-blocking from the start).
func openOffloadQueue(name string, multi bool) (*tapQueue, string, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", &os.PathError{Op: "open", Path: "/dev/net/tun", Err: err}
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, "", err
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI | iffVnetHdr)
	if multi {
		flags |= unix.IFF_MULTI_QUEUE
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, "", os.NewSyscallError("ioctl TUNSETIFF", err)
	}
	size := int32(vnetHdrSize)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), tunSetVnetHdr, uintptr(unsafe.Pointer(&size))); e != 0 {
		unix.Close(fd)
		return nil, "", os.NewSyscallError("ioctl TUNSETVNETHDRSZ", e)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6); err != nil {
		unix.Close(fd)
		return nil, "", os.NewSyscallError("ioctl TUNSETOFFLOAD", err)
	}
	f := os.NewFile(uintptr(fd), "tap")
	q, err := newTapQueue(f)
	if err != nil {
		f.Close()
		return nil, "", err
	}
	return q, strings.TrimRight(ifr.Name(), "\x00"), nil
}
