package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/internal/cienv"
)

// The autoconfiguration tests run tapstack slirp4netns WITHOUT -c on a
// namespace of their own inside an outer one, as rootlesskit and podman
// do, and let the namespace configure itself with the kernel's and
// busybox's clients: DHCP (udhcpc) for IPv4, SLAAC from the stack's
// router advertisements for IPv6.

// udhcpcScript applies a lease as busybox's default script would (address,
// default route) and prints what udhcpc passed it.
const udhcpcScript = `#!/bin/sh
echo "EVENT $1 ip=$ip subnet=$subnet router=$router dns=$dns mtu=$mtu lease=$lease serverid=$serverid"
case "$1" in
bound|renew)
	ip addr add "$ip/$subnet" dev "$interface" || exit 1
	ip route replace default via "$router" dev "$interface" || exit 1
	;;
esac
`

// autoconfTarget starts tapstack slirp4netns (args, then the target's PID
// and tap0) for a fresh namespace in o and returns a function that runs a
// command in that namespace, with its output.
func autoconfTarget(t *testing.T, o *outer, args ...string) (inTarget func(args ...string) (string, error), daemonOut func() string) {
	t.Helper()
	pid := slirpTarget(t, o)
	d := startSlirp(t, o, nil, tapstackBin, append(append([]string{"slirp4netns", "-r", "3"}, args...), fmt.Sprint(pid), "tap0")...)
	inTarget = func(args ...string) (string, error) {
		b, err := exec.Command("nsenter", append([]string{"-t", fmt.Sprint(pid), "-n"}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(b)), err
	}
	for _, dev := range []string{"lo", "tap0"} {
		if out, err := inTarget("ip", "link", "set", dev, "up"); err != nil {
			t.Fatalf("ip link set %s up: %v %s", dev, err, out)
		}
	}
	return inTarget, d.out.String
}

// outerFile serves a file of n random bytes from the outer namespace at
// port and returns its SHA-256.
func outerFile(t *testing.T, o *outer, port, n int) string {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7919 + i/251)
	}
	o.httpServer(port, string(b))
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// pyFetchSum fetches a URL and prints the SHA-256 of what came.
const pyFetchSum = `
import hashlib, sys, urllib.request
print(hashlib.sha256(urllib.request.urlopen(sys.argv[1], timeout=10).read()).hexdigest())
`

// TestDHCPLeaseWithUdhcpc: busybox udhcpc in a namespace nobody
// configured gets libslirp's lease (network+15 for a day, the gateway as
// router and server, the DNS address, the link's MTU), applies it, and
// downloads a file from the outer namespace from the leased address
// through the relay (its packets pass the daemon's source filter); with
// --cidr the lease is the other network's .15.
func TestDHCPLeaseWithUdhcpc(t *testing.T) {
	cienv.RequireTool(t, "busybox", "nsenter", "unshare", "python3")
	for _, c := range []struct {
		name            string
		args            []string
		ip, router, dns string
		mtu             string
	}{
		{"default", nil, "10.0.2.15", "10.0.2.2", "10.0.2.3", "1500"},
		{"cidr", []string{"--cidr", "10.0.3.0/24", "--mtu", "9000"}, "10.0.3.15", "10.0.3.2", "10.0.3.3", "9000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := newOuter(t)
			sum := outerFile(t, o, 8080, 300_000)
			script := filepath.Join(o.dir, "udhcpc.sh")
			if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
				t.Fatal(err)
			}
			inTarget, daemonOut := autoconfTarget(t, o, c.args...)
			out, err := inTarget("timeout", "30", "busybox", "udhcpc", "-i", "tap0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", script)
			if err != nil {
				t.Fatalf("udhcpc: %v\n%s\ndaemon: %s", err, out, daemonOut())
			}
			want := fmt.Sprintf("EVENT bound ip=%s subnet=255.255.255.0 router=%s dns=%s mtu=%s lease=86400 serverid=%s", c.ip, c.router, c.dns, c.mtu, c.router)
			if !strings.Contains(out, want) {
				t.Fatalf("udhcpc's script got\n%s\nwant the line %q", out, want)
			}
			if got, _ := inTarget("ip", "-4", "-o", "addr", "show", "dev", "tap0"); !strings.Contains(got, c.ip+"/24") {
				t.Fatalf("tap0 after the lease: %s", got)
			}
			got, err := inTarget("python3", "-c", pyFetchSum, fmt.Sprintf("http://%s:8080/index.html", outerV4))
			if err != nil || got != sum {
				t.Fatalf("download from %s through the relay: %v %q, want SHA-256 %s\ndaemon: %s", c.ip, err, got, sum, daemonOut())
			}
		})
	}
}

// pyRouterSolicit sends a router solicitation on an interface from a raw
// ICMPv6 socket and prints what the advertisement that answers says:
// its source, the prefixes with their flags, the MTU and the DNS servers
// (RDNSS, RFC 8106), which the kernel does not show.
const pyRouterSolicit = `
import ipaddress, socket, struct, sys, time
ifi = socket.if_nametoindex(sys.argv[1])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifi)
s.settimeout(1)
deadline = time.time() + 10
while time.time() < deadline:
    s.sendto(struct.pack("!BBHI", 133, 0, 0, 0), ("ff02::2", 0, 0, ifi))
    try:
        while True:
            data, addr = s.recvfrom(4096)
            if data[0] == 134:
                break
    except socket.timeout:
        continue
    out = ["from=" + addr[0].split("%")[0], "lifetime=%d" % struct.unpack("!H", data[6:8])[0]]
    o = data[16:]
    while len(o) >= 8 and o[1] > 0:
        t, l = o[0], o[1] * 8
        if t == 3:
            out.append("prefix=%s/%d,L=%d,A=%d" % (ipaddress.IPv6Address(o[16:32]), o[2], o[3] >> 7, (o[3] >> 6) & 1))
        elif t == 5:
            out.append("mtu=%d" % struct.unpack("!I", o[4:8])[0])
        elif t == 25:
            for i in range(8, l, 16):
                out.append("dns=%s" % ipaddress.IPv6Address(o[i:i+16]))
        o = o[l:]
    print(" ".join(out))
    sys.exit(0)
sys.exit("no router advertisement in 10 s")
`

// TestSLAACWithoutConfiguration: with -6 and no -c, the namespace that
// only sets tap0 up gets a global fd00::/64 address by SLAAC and a
// default route through the stack's link-local address from the
// stack's router advertisements, downloads a file from the outer
// namespace's IPv6 address through the relay from that address, and
// an advertisement names the DNS server fd00::3 and the MTU.
func TestSLAACWithoutConfiguration(t *testing.T) {
	cienv.RequireTool(t, "nsenter", "unshare", "python3")
	o := newOuter(t)
	sum := outerFile(t, o, 8080, 300_000)
	inTarget, daemonOut := autoconfTarget(t, o, "-6")
	var addrs, route string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		addrs, _ = inTarget("ip", "-6", "-o", "addr", "show", "dev", "tap0", "scope", "global")
		route, _ = inTarget("ip", "-6", "route", "show", "default")
		if strings.Contains(addrs, "inet6 fd00::") && !strings.Contains(addrs, "tentative") && strings.Contains(route, "via fe80::") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no SLAAC address and default route in 10 s: addresses %q, default route %q\ndaemon: %s", addrs, route, daemonOut())
		}
	}
	if strings.Count(addrs, "inet6 ") != 1 || !strings.Contains(addrs, "/64") {
		t.Errorf("global addresses: %q, want one in fd00::/64", addrs)
	}
	got, err := inTarget("python3", "-c", pyFetchSum, fmt.Sprintf("http://[%s]:8080/index.html", outerV6))
	if err != nil || got != sum {
		t.Fatalf("download over IPv6 through the relay: %v %q, want SHA-256 %s\naddresses %s\ndaemon: %s", err, got, sum, addrs, daemonOut())
	}
	ra, err := inTarget("python3", "-c", pyRouterSolicit, "tap0")
	if err != nil {
		t.Fatalf("router solicitation: %v %s", err, ra)
	}
	gwLL := strings.Fields(route[strings.Index(route, "via ")+4:])[0]
	for _, want := range []string{"from=" + gwLL, "lifetime=1800", "prefix=fd00::/64,L=1,A=1", "mtu=1500", "dns=fd00::3"} {
		if !strings.Contains(" "+ra+" ", " "+want+" ") {
			t.Errorf("the router advertisement says %q; want %q in it", ra, want)
		}
	}
}
