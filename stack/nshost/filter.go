package nshost

import (
	"encoding/binary"
	"net/netip"
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
	var v4 [][4]byte
	var v6 [][16]byte
	for _, a := range allowed {
		a = a.Unmap()
		if a.Is4() {
			v4 = append(v4, a.As4())
		} else {
			v6 = append(v6, a.As16())
		}
	}
	return func(f []byte) bool {
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
}
