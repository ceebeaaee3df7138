package relay

import (
	"net/netip"
	"sync"
	"testing"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack"
)

// frameRig is a gateway stack with every forwarder installed, on two
// in-memory wires (one plain, one with virtio_net_hdr), for feeding it
// frames from outside.
type frameRig struct {
	plain, vnet link.Device
}

var (
	rigOnce sync.Once
	theRig  *frameRig
)

// gatewayRig builds the rig once per process: the fuzzer calls the
// target many times and a stack per call would be slow.
func gatewayRig(t testing.TB) *frameRig {
	rigOnce.Do(func() {
		pa, pb := link.Pipe()
		va, vb := link.Pipe()
		lp, err := link.New(link.Options{Devices: []link.Device{pa}})
		if err != nil {
			t.Fatal(err)
		}
		lv, err := link.New(link.Options{Devices: []link.Device{va}, VnetHdr: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = stack.New(stack.Config{
			Init: func(st *stack.Stack) error {
				catchTCP(st, 64, func(r *tcpRequest) {
					switch r.ID.Dst.Port() % 4 {
					case 0:
						r.Refuse()
					case 1:
						r.Unreachable(false)
					case 2:
						if s, err := r.Accept(); err == nil {
							s.Close()
						}
					default:
						r.Ignore()
					}
				})
				catchUDP(st, func(r *udpRequest) bool {
					if r.ID.Dst.Port()%2 == 0 {
						_ = r.Unreachable(unreachPort)
						return true
					}
					if s, err := r.Accept(); err == nil {
						s.Close()
					}
					return true
				})
				catchEcho(st, func(e *echoRequest) { _ = e.Reply(e.Data) })
				return nil
			},
			Links: []stack.LinkConfig{
				{Name: "plain", Endpoint: lp, Gateway: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.2.2/24"), netip.MustParsePrefix("fd00::2/64")}},
				{Name: "vnet", Endpoint: lv, Gateway: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.3.2/24"), netip.MustParsePrefix("fd03::2/64")}},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		// Drain what the stack sends back so that the wires never fill.
		for _, d := range []link.Device{pb, vb} {
			go func() {
				buf := make([]byte, 70000)
				for {
					if _, err := d.ReadFrame(buf); err != nil {
						return
					}
				}
			}()
		}
		theRig = &frameRig{plain: pb, vnet: vb}
	})
	return theRig
}

// FuzzFramesIntoGateway writes frames from outside into a gateway stack's
// receive path (Ethernet, then IPv4/IPv6, ARP, ICMP, TCP, UDP, with and
// without a virtio_net_hdr in front): whatever they hold, nothing may
// panic. The stack is shared by all inputs, as the daemon's is by all
// packets.
func FuzzFramesIntoGateway(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(false, s)
		f.Add(true, append(make([]byte, 12), s...))
	}
	f.Fuzz(func(t *testing.T, vnet bool, frame []byte) {
		r := gatewayRig(t)
		dev := r.plain
		if vnet {
			dev = r.vnet
		}
		_ = dev.WriteFrame([][]byte{frame})
	})
}
