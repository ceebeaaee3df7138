package tests

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/internal/cienv"
)

// debianPython is the python3 that sees Debian's packages (scapy).
const debianPython = "/usr/bin/python3"

// pyMalformed writes malformed frames of every class we could think of
// into tap0 with scapy, from the namespace's own addresses (frames from
// other sources are dropped before the stack parses them: a few of those
// are sent too). It prints how many it sent.
const pyMalformed = `
import random, sys
from scapy.all import *
conf.verb = 0
random.seed(1)
iface = "tap0"
me = get_if_hwaddr(iface)
gw = getmacbyip("10.0.2.2") or "ff:ff:ff:ff:ff:ff"
def E(t=None):
    return Ether(src=me, dst=gw) if t is None else Ether(src=me, dst=gw, type=t)
S4, S6 = "10.0.2.100", "fd00::100"
D4s = ["10.0.2.2", "198.51.100.1", "10.0.2.3"]
D6s = ["fd00::2", "2001:db8::1", "fd00::3"]
F = []
# Runts and bare headers.
for n in range(0, 64, 3):
    F.append(bytes(E() / Raw(b"\x00" * 64))[:n])
F.append(bytes(E(0x0800)))
F.append(bytes(E(0x86dd)))
F.append(bytes(E(0x0806)))
for d4 in D4s:
    # IPv4 header fields out of range.
    for ihl in range(16):
        F.append(E() / IP(src=S4, dst=d4, ihl=ihl) / TCP(dport=7, flags="S"))
    for tl in (0, 1, 19, 20, 21, 39, 40, 41, 1000, 65535):
        F.append(E() / IP(src=S4, dst=d4, len=tl) / TCP(dport=7, flags="S"))
    for v in (0, 4, 5, 6, 15):
        F.append(E() / IP(src=S4, dst=d4, version=v) / TCP(dport=7, flags="S"))
    F.append(E() / IP(src=S4, dst=d4, chksum=0x1234) / TCP(dport=7, flags="S"))
    F.append(E() / IP(src=S4, dst=d4, ttl=0) / TCP(dport=7, flags="S"))
    F.append(E() / IP(src=S4, dst=d4, proto=253) / Raw(b"x" * 40))
    # IP options, good and bad.
    for opts in ([IPOption_RR()], [IPOption_LSRR(routers=["1.2.3.4"])], [IPOption_SSRR(routers=["10.0.2.2"])]):
        F.append(E() / IP(src=S4, dst=d4, options=opts) / TCP(dport=7, flags="S"))
    for opt in (b"\x44\x02\x00\x00", b"\x07\x00\x00\x00", b"\x83\xff" + b"\x00" * 30, b"\x01" * 40, b"\x94\x04\x00\x00", b"\x44\x28" + b"\x05" * 38):
        tcp = bytes(TCP(dport=7, flags="S"))
        h = bytearray(bytes(IP(src=S4, dst=d4, proto=6, ihl=5 + len(opt) // 4, len=20 + len(opt) + len(tcp)))[:20]) + opt
        h[10:12] = b"\x00\x00"
        h[10:12] = checksum(bytes(h)).to_bytes(2, "big")
        F.append(bytes(E(0x0800)) + bytes(h) + tcp)
    # Every TCP flag combination, to a service and to a relayed address.
    for f in range(256):
        F.append(E() / IP(src=S4, dst=d4) / TCP(sport=random.randint(1024, 65535), dport=random.choice([7, 9, 80]), flags=f, seq=random.getrandbits(32), ack=random.getrandbits(32)) / Raw(b"d" * (f % 3)))
    # Bad data offsets, checksums, options.
    for off in range(16):
        F.append(E() / IP(src=S4, dst=d4) / TCP(dport=7, flags="S", dataofs=off) / Raw(b"\x00" * 20))
    F.append(E() / IP(src=S4, dst=d4) / TCP(dport=7, flags="S", chksum=0xdead))
    for raw in (b"\x02\x00", b"\x02\x04\x00", b"\x03\x03\xff", b"\x08\x0a" + b"\x00" * 8, b"\x04\x00", b"\x05\x01", b"\x05\x0a" + b"\xff" * 8, b"\xfe\x28" + b"\x00" * 38, b"\x00" * 40):
        F.append(E() / IP(src=S4, dst=d4) / TCP(dport=7, flags="S", options=[(raw[0], raw[2:])] if len(raw) > 2 else []) / Raw(raw))
    # UDP with bad lengths and checksums, DNS garbage.
    for ul in (0, 1, 7, 8, 9, 1000, 65535):
        F.append(E() / IP(src=S4, dst=d4) / UDP(sport=5353, dport=53, len=ul) / Raw(b"q" * 12))
    F.append(E() / IP(src=S4, dst=d4) / UDP(dport=53, chksum=0x1111) / Raw(b"q" * 12))
    for _ in range(30):
        F.append(E() / IP(src=S4, dst=d4) / UDP(sport=random.randint(1024, 65535), dport=53) / Raw(bytes(random.getrandbits(8) for _ in range(random.randint(0, 600)))))
    # Fragments: overlapping, oversized, incomplete, tiny.
    big = IP(src=S4, dst=d4, id=random.getrandbits(16)) / ICMP() / Raw(b"A" * 3000)
    frs = fragment(big, fragsize=800)
    F.extend(E() / f for f in frs[:-1])  # incomplete
    ov = IP(src=S4, dst=d4, id=4242, flags="MF", frag=0, proto=1) / Raw(b"B" * 64)
    ov2 = IP(src=S4, dst=d4, id=4242, flags="MF", frag=4, proto=1) / Raw(b"C" * 64)
    ov3 = IP(src=S4, dst=d4, id=4242, frag=2, proto=1) / Raw(b"D" * 64)
    F += [E() / ov, E() / ov2, E() / ov3]
    F.append(E() / IP(src=S4, dst=d4, id=777, frag=8189, proto=17) / Raw(b"E" * 200))  # past 65535
    F.append(E() / IP(src=S4, dst=d4, id=778, flags="MF", frag=0, proto=6) / Raw(b"F" * 8))  # tiny first
    F.append(E() / IP(src=S4, dst=d4, id=778, frag=1, proto=6) / Raw(b"G" * 40))
    F.append(E() / IP(src=S4, dst=d4, id=779, flags="MF", frag=0, proto=6) / Raw(b"H" * 7))  # not a multiple of 8
    # Short ICMP, ICMP errors quoting garbage or our own flows.
    for n in range(8):
        F.append(E() / IP(src=S4, dst=d4, proto=1) / Raw(b"\x08" * n))
    for t, c in ((3, 0), (3, 1), (3, 3), (3, 4), (4, 0), (5, 1), (11, 0), (12, 0), (3, 15)):
        F.append(E() / IP(src=S4, dst=d4) / ICMP(type=t, code=c) / Raw(bytes(random.getrandbits(8) for _ in range(random.randint(0, 60)))))
        F.append(E() / IP(src=S4, dst=d4) / ICMP(type=t, code=c) / IP(src=d4, dst=S4) / TCP(sport=7, dport=40000))
        F.append(E() / IP(src=S4, dst=d4) / ICMP(type=t, code=c) / IP(src=d4, dst=S4, ihl=15) / Raw(b"\x00" * 4))
    F.append(E() / IP(src=S4, dst=d4) / ICMP(type=8) / Raw(b"p" * 1400))
# Short and odd ARP.
for n in range(0, 28, 4):
    F.append(E(0x0806) / Raw(bytes(ARP(psrc=S4, pdst="10.0.2.2", hwsrc=me))[:n]))
F.append(E(0x0806) / ARP(hwlen=0, plen=255, psrc=S4, pdst="10.0.2.2"))
F.append(E(0x0806) / ARP(op=2, psrc="10.0.2.2", hwsrc="00:00:00:00:00:00", pdst=S4))
F.append(E(0x0806) / ARP(op=99, psrc=S4, pdst="10.0.2.2"))
for d6 in D6s:
    # IPv6 extension header chains.
    for chain in (IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(addresses=["fd00::2"]),
                  IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt(),
                  IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop(),  # hop-by-hop not first
                  IPv6ExtHdrFragment(m=1, id=5) / IPv6ExtHdrFragment(m=0, id=6),
                  IPv6ExtHdrRouting(type=0, addresses=["fd00::2", "fd00::100"]),
                  IPv6ExtHdrRouting(type=4, segleft=200)):
        F.append(E() / IPv6(src=S6, dst=d6) / chain / TCP(dport=7, flags="S"))
    long = IPv6ExtHdrDestOpt()
    for _ in range(60):
        long = long / IPv6ExtHdrDestOpt()
    F.append(E() / IPv6(src=S6, dst=d6) / long / TCP(dport=7, flags="S"))
    F.append(E() / IPv6(src=S6, dst=d6, nh=0) / Raw(b"\x3b\xff" + b"\x01" * 30))  # option lengths past the end
    for pl in (0, 1, 8, 65535):
        F.append(E() / IPv6(src=S6, dst=d6, plen=pl) / TCP(dport=7, flags="S"))
    for f in range(0, 256, 7):
        F.append(E() / IPv6(src=S6, dst=d6) / TCP(dport=random.choice([7, 80]), flags=f))
    for n in range(4):
        F.append(E() / IPv6(src=S6, dst=d6, nh=58) / Raw(b"\x80" * n))
    F.append(E() / IPv6(src=S6, dst=d6) / ICMPv6DestUnreach() / Raw(bytes(random.getrandbits(8) for _ in range(50))))
    F.append(E() / IPv6(src=S6, dst=d6) / ICMPv6PacketTooBig(mtu=10) / IPv6(src=d6, dst=S6) / TCP(sport=7))
    F.append(E() / IPv6(src=S6, dst="ff02::1:ff00:2", hlim=255) / ICMPv6ND_NS(tgt="fd00::2") / Raw(b"\x01\x00" + b"\x00" * 6))  # option length 0
    F.append(E() / IPv6(src=S6, dst="ff02::1", hlim=255) / ICMPv6ND_RA() / Raw(b"\x03\x04" + b"\xff" * 30))
    F.append(E() / IPv6(src=S6, dst=d6) / UDP(dport=53, len=3) / Raw(b"x"))
    frs = fragment6(IPv6(src=S6, dst=d6) / IPv6ExtHdrFragment(id=99) / ICMPv6EchoRequest(data=b"Z" * 3000), 1000)
    F.extend(E() / f for f in frs[:-1])
# A few spoofed sources: dropped at the link.
for i in range(20):
    F.append(E() / IP(src="192.0.2.%d" % i, dst="10.0.2.2") / TCP(dport=7, flags="S"))
for fr in F:
    sendp(fr, iface=iface)
print("sent", len(F))
`

// TestMalformedFramesDoNotHurtTheDaemon writes malformed frames of every
// class into a running daemon's TAP; it must still answer ping and echo,
// hold what it held before, and have logged no panic.
func TestMalformedFramesDoNotHurtTheDaemon(t *testing.T) {
	engines(t, testMalformedFramesDoNotHurtTheDaemon)
}

func testMalformedFramesDoNotHurtTheDaemon(t *testing.T, flags []string) {
	if err := exec.Command(debianPython, "-c", "import scapy").Run(); err != nil {
		cienv.Skip(t, "skipped: needs Debian's python3-scapy (/usr/bin/python3 -c 'import scapy')")
	}
	o := newOuter(t)
	o.bg("python3", "-c", pyLiveServer, outerV4, "80")
	o.waitTCP(outerV4, 80)
	ns := ncNamespace(t)
	d := o.startDaemon(ns, append([]string{"--serve", "echo,discard", "--udp-idle-timeout", "3s"}, flags...)...)
	echo := func() string {
		out, _ := inNS(ns, 20*time.Second, []byte("still here\n"), "nc", "-N", "-w", "5", "10.0.2.2", "7")
		return out
	}
	if got := echo(); got != "still here\n" {
		t.Fatalf("echo before: %q", got)
	}
	base := d.usage()
	out, err := inNS(ns, 300*time.Second, nil, debianPython, "-c", pyMalformed)
	if err != nil || !strings.HasPrefix(out, "sent ") {
		t.Fatalf("scapy: %v %s", err, out)
	}
	t.Logf("%s; daemon: %v", strings.TrimSpace(out), d.stats())
	if out, err := inNS(ns, 20*time.Second, nil, "ping", "-c", "2", "-W", "2", "10.0.2.2"); err != nil {
		t.Fatalf("ping after the frames: %v %s", err, out)
	}
	if out, err := inNS(ns, 20*time.Second, nil, "ping", "-6", "-c", "2", "-W", "2", "fd00::2"); err != nil {
		t.Fatalf("ping -6 after the frames: %v %s", err, out)
	}
	if got := echo(); got != "still here\n" {
		t.Fatalf("echo after the frames: %q", got)
	}
	if out, _ := inNS(ns, 20*time.Second, nil, "python3", "-c", pyTimedConnects, outerV4, "80", "5", "1", "5"); !strings.HasPrefix(out, "ok=5 ") {
		t.Fatalf("relay after the frames: %q", out)
	}
	d.backToBaseline(base)
}
