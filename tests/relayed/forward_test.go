package relayed

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/tests/nstest"
)

// pyWhoServer answers each TCP connection and each UDP datagram on a port
// with the address and port it came from, as the namespace sees them.
const pyWhoServer = `
import socket, sys, threading
port = int(sys.argv[1])
def tcp():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port)); s.listen(16)
    while True:
        c, a = s.accept()
        c.sendall(("%s %d\n" % (a[0].removeprefix("::ffff:"), a[1])).encode()); c.close()
def udp():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    while True:
        d, a = s.recvfrom(100)
        s.sendto(("%s %d\n" % (a[0].removeprefix("::ffff:"), a[1])).encode(), a)
threading.Thread(target=tcp, daemon=True).start()
udp()
`

// TestForwardKeepsTheClientAddress: a client at a host address that is
// not loopback, v4 and v6, TCP and UDP, reaches a server in the
// namespace through a port forward and is seen there with its own
// address and port, as slirp4netns keeps them; a client on the host's
// loopback is seen as the gateway (10.0.2.2, fd00::2).
func TestForwardKeepsTheClientAddress(t *testing.T) {
	engines(t, testForwardKeepsTheClientAddress)
}

func testForwardKeepsTheClientAddress(t *testing.T, cfg daemon.Config) {
	var fwds []relay.Forward
	for _, spec := range []string{
		nstest.OuterV4 + ":18080:8080/tcp", nstest.OuterV4 + ":18080:8080/udp",
		"[" + nstest.OuterV6 + "]:18080:8080/tcp", "[" + nstest.OuterV6 + "]:18080:8080/udp",
		"127.0.0.1:18081:8080/tcp", "127.0.0.1:18081:8080/udp",
	} {
		f, err := relay.ParseForward(spec)
		if err != nil {
			t.Fatal(err)
		}
		fwds = append(fwds, f)
	}
	cfg.Relay.Forwards = fwds
	env := nstest.NewRelayed(t, cfg)
	cmd := env.Command(t.Context(), "python3", "-c", pyWhoServer, "8080")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	ask := func(network, from, to string) string {
		t.Helper()
		d := net.Dialer{Timeout: 5 * time.Second}
		if from != "" {
			la, _ := netip.ParseAddr(from)
			if strings.HasPrefix(network, "tcp") {
				d.LocalAddr = &net.TCPAddr{IP: la.AsSlice()}
			} else {
				d.LocalAddr = &net.UDPAddr{IP: la.AsSlice()}
			}
		}
		var reply string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			c, err := d.Dial(network, to)
			if err != nil {
				continue
			}
			c.SetDeadline(time.Now().Add(time.Second))
			if strings.HasPrefix(network, "udp") {
				c.Write([]byte("who"))
			}
			buf := make([]byte, 100)
			n, _ := c.Read(buf)
			local := c.LocalAddr().String()
			c.Close()
			if n > 0 {
				reply = strings.TrimSpace(string(buf[:n]))
				ap := netip.MustParseAddrPort(local)
				return strings.Replace(reply, " "+itoa(ap.Port()), " PORT", 1)
			}
		}
		t.Fatalf("%s %s: no answer from the namespace (last reply %q)", network, to, reply)
		return ""
	}
	for _, c := range []struct{ network, from, to, want string }{
		{"tcp4", nstest.OuterV4, nstest.OuterV4 + ":18080", nstest.OuterV4 + " PORT"},
		{"udp4", nstest.OuterV4, nstest.OuterV4 + ":18080", nstest.OuterV4 + " PORT"},
		{"tcp6", nstest.OuterV6, "[" + nstest.OuterV6 + "]:18080", nstest.OuterV6 + " PORT"},
		{"udp6", nstest.OuterV6, "[" + nstest.OuterV6 + "]:18080", nstest.OuterV6 + " PORT"},
		{"tcp4", "", "127.0.0.1:18081", "10.0.2.2"},
		{"udp4", "", "127.0.0.1:18081", "10.0.2.2"},
	} {
		got := ask(c.network, c.from, c.to)
		if got != c.want && !(c.want == "10.0.2.2" && strings.HasPrefix(got, "10.0.2.2 ")) {
			t.Errorf("%s from %q to %s: the namespace saw %q, want %q", c.network, c.from, c.to, got, c.want)
		}
	}
}

func itoa(p uint16) string {
	return netip.AddrPortFrom(netip.IPv4Unspecified(), p).String()[len("0.0.0.0:"):]
}
