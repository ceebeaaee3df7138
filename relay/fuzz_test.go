package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// FuzzParseForward: a port-forward spec from the command line or the
// control socket gives a Forward or an error, never a panic; a Forward
// prints as a spec that parses back to itself.
func FuzzParseForward(f *testing.F) {
	for _, s := range []string{"8080:80", "127.0.0.1:8080:80/tcp", "[::1]:8443:443/udp", "0.0.0.0:1:2", ":80",
		"70000:80", "8080:0", "[::1:8080:80", "a:b:c", "8080:80/sctp", "[fe80::1%eth0]:1:2", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		fw, err := ParseForward(spec)
		if err != nil {
			return
		}
		again, err := ParseForward(fw.String())
		if err != nil || again != fw {
			t.Fatalf("%q parsed as %v, which prints as %q and parses back as %v, %v", spec, fw, fw.String(), again, err)
		}
	})
}

// FuzzParsePrefixes: --allow and --deny lists.
func FuzzParsePrefixes(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8,192.0.2.1", "::/0", "fe80::/10,", " , ", "1.2.3.4/33", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParsePrefixes(s)
		if err != nil {
			return
		}
		for _, p := range ps {
			if !p.IsValid() {
				t.Fatalf("%q gave an invalid prefix %v", s, p)
			}
		}
	})
}

// fakeUpstream is a DNS server on loopback that answers every query with
// the bytes it was given, under the query's ID.
type fakeUpstream struct {
	mu     sync.Mutex
	answer []byte
	addr   netip.AddrPort
}

var (
	upOnce sync.Once
	up     *fakeUpstream
)

func upstream(t testing.TB) *fakeUpstream {
	upOnce.Do(func() {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		up = &fakeUpstream{addr: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
		go func() {
			buf := make([]byte, 65535)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				up.mu.Lock()
				a := append([]byte{}, up.answer...)
				up.mu.Unlock()
				if n >= 2 && len(a) >= 2 {
					copy(a[:2], buf[:2])
				}
				pc.WriteTo(a, from)
			}
		}()
	})
	return up
}

// FuzzDNSForward: the forwarder's handling of a query from the namespace
// and of the upstream's answer, both from outside. Whatever they hold,
// it answers with the client's ID or not at all, and never panics.
func FuzzDNSForward(f *testing.F) {
	q := []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 4, 'n', 'a', 'm', 'e', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1}
	ans := append(append([]byte{}, q...), 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 2, 50)
	ans[2], ans[7] = 0x81, 1
	f.Add(q, ans)
	f.Add(q[:12], ans[:12])
	f.Add([]byte{1}, []byte{})
	f.Add(q, []byte{0, 0})
	u := upstream(f)
	dir := f.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	os.WriteFile(rc, []byte("nameserver "+u.addr.Addr().String()+"\n"), 0o644)
	g := New(Config{ResolvConf: rc})
	g.resolv.fixedPort = u.addr.Port()
	g.dnsTimeout = 50 * time.Millisecond // an answer the forwarder rejects costs this
	f.Fuzz(func(t *testing.T, query, answer []byte) {
		u.mu.Lock()
		u.answer = answer
		u.mu.Unlock()
		resp := g.forwardDNS(query, false)
		if resp == nil {
			return
		}
		if len(query) < 2 || len(resp) < 12 || binary.BigEndian.Uint16(resp) != binary.BigEndian.Uint16(query) {
			t.Fatalf("answer %x to query %x does not carry the client's ID", resp, query)
		}
	})
}
