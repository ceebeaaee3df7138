package netns

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Listening are the ports that sockets of a namespace listen on (TCP)
// or are bound to (UDP), by family, as /proc/net shows them.
type Listening struct {
	TCP4, TCP6, UDP4, UDP6 map[uint16]bool
}

// ReadListening reads them from dir, the /proc/PID/net of a process in
// the namespace (or /proc/thread-self/net of a thread in it). Sockets
// bound to a loopback address are left out (nothing outside the
// namespace reaches them) unless loopback is true.
func ReadListening(dir string, loopback bool) (Listening, error) {
	l := Listening{TCP4: map[uint16]bool{}, TCP6: map[uint16]bool{}, UDP4: map[uint16]bool{}, UDP6: map[uint16]bool{}}
	for _, f := range []struct {
		name  string
		state string // TCP_LISTEN 0A, UDP's TCP_CLOSE 07 (bound, not connected)
		into  map[uint16]bool
	}{{"tcp", "0A", l.TCP4}, {"tcp6", "0A", l.TCP6}, {"udp", "07", l.UDP4}, {"udp6", "07", l.UDP6}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			if os.IsNotExist(err) {
				continue // no IPv6 in this kernel
			}
			return Listening{}, err
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Scan() // the header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != f.state {
				continue
			}
			local := fields[1] // ADDR:PORT in hex
			i := strings.LastIndexByte(local, ':')
			if i < 0 || (!loopback && isLoopbackHex(local[:i])) {
				continue
			}
			port, err := strconv.ParseUint(local[i+1:], 16, 16)
			if err == nil && port != 0 {
				f.into[uint16(port)] = true
			}
		}
	}
	return l, nil
}

// isLoopbackHex says whether a /proc/net address (hex, in the kernel's
// byte order per 32-bit word) is 127.0.0.0/8 or ::1 (or ::ffff:127.x).
func isLoopbackHex(h string) bool {
	switch len(h) {
	case 8:
		return strings.HasSuffix(h, "7F") // little-endian word: the first byte last
	case 32:
		return h == "00000000000000000000000001000000" || (h[:16] == "0000000000000000" && h[16:24] == "FFFF0000" && strings.HasSuffix(h, "7F"))
	}
	return false
}

// Listening reads what sockets of n listen on, from a thread inside n.
func (n *Namespace) Listening() (Listening, error) {
	var l Listening
	err := n.Do(func() error {
		var err error
		l, err = ReadListening("/proc/thread-self/net", false)
		return err
	})
	return l, err
}
