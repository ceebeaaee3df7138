package nshost

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// SourceFilter returns a link.Options.Filter that lets through only the
// IP packets whose source is one of allowed, an IPv6 link-local address
// or the unspecified address (duplicate address detection); frames of
// other kinds (ARP) pass. A namespace behind a gateway has known
// addresses: a packet from any other source is spoofed, and dropping it
// before the stack parses it keeps a spoofed flood from costing more than
// a read (the stack would answer SYNs to its own services with SYN-ACKs to
// the spoofed sources, and hand the others to the relay).
func SourceFilter(allowed []netip.Addr) func(frame []byte) bool {
	return NewSourceSet(allowed).Allows
}

// SourceSet is the set of sources a SourceFilter lets through; Add
// widens it while frames flow (a port forward to another address of the
// namespace).
type SourceSet struct {
	mu  sync.Mutex // serialises Add
	set atomic.Pointer[sourceLists]
}

type sourceLists struct {
	v4 [][4]byte
	v6 [][16]byte
}

// NewSourceSet returns the set of allowed.
func NewSourceSet(allowed []netip.Addr) *SourceSet {
	s := &SourceSet{}
	s.set.Store(&sourceLists{})
	for _, a := range allowed {
		s.Add(a)
	}
	return s
}

// Add lets a through too.
func (s *SourceSet) Add(a netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.set.Load()
	if a = a.Unmap(); a.Is4() && slices.Contains(old.v4, a.As4()) || a.Is6() && slices.Contains(old.v6, a.As16()) {
		return
	}
	n := &sourceLists{v4: append([][4]byte(nil), old.v4...), v6: append([][16]byte(nil), old.v6...)}
	a = a.Unmap()
	if a.Is4() {
		n.v4 = append(n.v4, a.As4())
	} else {
		n.v6 = append(n.v6, a.As16())
	}
	s.set.Store(n)
}

// Allows is the filter: it reports whether frame f may go on.
func (s *SourceSet) Allows(f []byte) bool {
	l := s.set.Load()
	v4, v6 := l.v4, l.v6
	if len(f) < 14 {
		return false
	}
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0800: // IPv4
		if len(f) < 14+20 {
			return false
		}
		src := [4]byte(f[26:30])
		if src == [4]byte{} {
			return true
		}
		for _, a := range v4 {
			if a == src {
				return true
			}
		}
		return false
	case 0x86dd: // IPv6
		if len(f) < 14+40 {
			return false
		}
		src := [16]byte(f[22:38])
		if src == [16]byte{} || (src[0] == 0xfe && src[1]&0xc0 == 0x80) {
			return true
		}
		for _, a := range v6 {
			if a == src {
				return true
			}
		}
		return false
	}
	return true
}
