package link

import "net"

// A Device moves whole Ethernet frames (destination MAC first, no preamble,
// no FCS) to and from a wire. The Endpoint calls ReadFrame from exactly one
// goroutine per device and WriteFrame from any number of goroutines.
type Device interface {
	// ReadFrame reads one frame into b and returns its length. A frame
	// longer than b is truncated. After Close it returns an error that
	// satisfies errors.Is(err, net.ErrClosed); Close unblocks a pending
	// ReadFrame.
	ReadFrame(b []byte) (int, error)

	// WriteFrame writes one frame made of the concatenation of bufs. It
	// returns an error satisfying errors.Is(err, net.ErrClosed) after Close.
	WriteFrame(bufs [][]byte) error

	// Close releases the device. It is idempotent.
	Close() error
}

// errClosed is what devices return after Close.
var errClosed = net.ErrClosed
