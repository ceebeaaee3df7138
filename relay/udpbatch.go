package relay

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpBatch holds the namespace's datagrams to one host socket while the
// loop reads a batch of frames off the link, and sends them with one
// sendmmsg when the batch ends (or a datagram for another socket comes):
// a system call costs more here than the copy of a datagram.
type udpBatch struct {
	idx  uint32 // the flow whose socket the batch is for
	n    int    // datagrams held
	data [linkBatch][]byte
	iov  [linkBatch]unix.Iovec
	hdr  [linkBatch]mmsghdr
}

// mmsghdr is struct mmsghdr of sendmmsg(2).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// maxBatched is the largest datagram a batch copies; a larger one is
// sent at once (the batch keeps at most linkBatch × maxBatched bytes).
const maxBatched = 16 << 10

// batchUDP holds payload for f's socket if the loop is reading a batch
// of frames (false: send it now).
func (e *engine) batchUDP(f *tcpFlow, idx uint32, payload []byte) bool {
	b := &e.ub
	if !e.batching || len(payload) > maxBatched {
		if b.n > 0 {
			e.flushUDP()
		}
		return false
	}
	if b.n > 0 && (b.idx != idx || b.n == len(b.hdr)) {
		e.flushUDP()
	}
	b.idx = idx
	d := append(b.data[b.n][:0], payload...)
	b.data[b.n] = d
	b.iov[b.n] = unix.Iovec{}
	if len(d) > 0 {
		b.iov[b.n].Base = &d[0]
		b.iov[b.n].SetLen(len(d))
	}
	b.hdr[b.n] = mmsghdr{}
	b.hdr[b.n].hdr.Iov = &b.iov[b.n]
	b.hdr[b.n].hdr.SetIovlen(1)
	b.n++
	return true
}

// flushUDP sends the batch's datagrams, counting them as udpInput does
// one.
func (e *engine) flushUDP() {
	b := &e.ub
	f := &e.flows[b.idx]
	for sent := 0; sent < b.n; {
		m, err := sendmmsg(int(f.fd), b.hdr[sent:b.n])
		if err == nil {
			for _, d := range b.data[sent : sent+m] {
				f.up += uint64(len(d))
				e.g.bytes.up.Add(uint64(len(d)))
			}
			sent += m
			continue
		}
		if err == unix.EAGAIN || err == unix.ENOBUFS {
			break // the host socket's buffer is full: the rest is dropped, as a full queue drops
		}
		e.udpError(f, b.idx, err) // the first one's; the rest go on
		sent++
	}
	b.n = 0
	clear(b.iov[:]) // no pointers into data outlive the batch
	clear(b.hdr[:])
}

// sendmmsg sends hdr's datagrams on a connected socket without waiting:
// how many it sent, or the error of the first.
func sendmmsg(fd int, hdr []mmsghdr) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdr[0])), uintptr(len(hdr)),
		unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	if n == 0 {
		return 0, unix.EAGAIN
	}
	return int(n), nil
}
