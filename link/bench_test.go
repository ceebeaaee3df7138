package link_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tapstack/tapstack/link"
)

// feedDevice hands out the same frame n times, then blocks until Close;
// it sends nothing anywhere.
type feedDevice struct {
	frame  []byte
	n      atomic.Int64
	closed chan struct{}
	once   sync.Once
}

func (d *feedDevice) ReadFrame(b []byte) (int, error) {
	if d.n.Add(-1) < 0 {
		<-d.closed
		return 0, net.ErrClosed
	}
	return copy(b, d.frame), nil
}

func (d *feedDevice) WriteFrame([][]byte) error { return nil }

func (d *feedDevice) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}

// countDispatcher counts what the link delivers.
type countDispatcher struct {
	n    atomic.Int64
	done chan struct{}
	want int64
}

func (c *countDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	if c.n.Add(1) == c.want {
		close(c.done)
	}
}

func (c *countDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// BenchmarkReceive measures the link's receive path alone: a 1514-byte
// IPv4 frame from the device to the network layer, with allocations per
// frame (go test -bench . -benchmem ./link/).
func BenchmarkReceive(b *testing.B) {
	frame := make([]byte, 1514)
	eth := header.Ethernet(frame)
	eth.Encode(&header.EthernetFields{SrcAddr: "\x02\x00\x00\x00\x00\x01", DstAddr: "\x02\x00\x00\x00\x00\x02", Type: header.IPv4ProtocolNumber})
	dev := &feedDevice{frame: frame, closed: make(chan struct{})}
	dev.n.Store(int64(b.N))
	ep, err := link.New(link.Options{Devices: []link.Device{dev}})
	if err != nil {
		b.Fatal(err)
	}
	d := &countDispatcher{done: make(chan struct{}), want: int64(b.N)}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	ep.Attach(d)
	<-d.done
	b.StopTimer()
	ep.Close()
	ep.Wait()
}
