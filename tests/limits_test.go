package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapstack/tapstack/internal/cienv"
)

// daemon is a tapstack up of a test, seen from outside: its control
// socket and its process.
type daemon struct {
	t   *testing.T
	ctl string
	pid int
}

// stats asks the daemon's control socket for its counters.
func (d *daemon) stats() map[string]uint64 {
	d.t.Helper()
	c, err := net.DialTimeout("unix", d.ctl, 5*time.Second)
	if err != nil {
		d.t.Fatalf("control socket: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintln(c, `{"op":"stats"}`)
	var resp struct {
		OK    bool
		Error string
		Stats map[string]uint64
	}
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&resp); err != nil || !resp.OK {
		d.t.Fatalf("stats: %v %s", err, resp.Error)
	}
	return resp.Stats
}

// usage is what a daemon holds.
type usage struct {
	rssKiB, fds int
	goroutines  uint64
	sockets     uint64
}

func (u usage) String() string {
	return fmt.Sprintf("RSS %.1f MiB, %d fds, %d goroutines, %d sockets", float64(u.rssKiB)/1024, u.fds, u.goroutines, u.sockets)
}

func (d *daemon) usage() usage {
	d.t.Helper()
	var u usage
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.pid))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			u.rssKiB, _ = strconv.Atoi(f[1])
		}
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.pid))
	u.fds = len(ents)
	st := d.stats()
	u.goroutines, u.sockets = st["goroutines"], st["sockets_in_use"]
	return u
}

// backToBaseline waits (up to 30 s) until the daemon holds no more than
// at base: RSS within 10 MiB, fds, goroutines (a few of slack: the
// runtime's own) and sockets back.
func (d *daemon) backToBaseline(base usage) {
	d.t.Helper()
	d.backToBaselineWithin(base, 30*time.Second)
}

// backToBaselineWithin is backToBaseline with a wait of its own.
func (d *daemon) backToBaselineWithin(base usage, wait time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		u := d.usage()
		if u.rssKiB <= base.rssKiB+10<<10 && u.fds <= base.fds && u.goroutines <= base.goroutines+4 && u.sockets <= base.sockets {
			d.t.Logf("baseline %v; after %v", base, u)
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("not back to baseline after %v: %v, baseline %v; stats %v", wait, u, base, d.stats())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// startDaemon runs tapstack up in the outer namespace for namespace ns.
func (o *outer) startDaemon(ns string, args ...string) *daemon {
	o.t.Helper()
	ctl := filepath.Join(o.dir, nsBase(ns)+".sock")
	cmd, _, _ := o.upIn(append([]string{"--netns", ns, "--control", ctl}, args...)...)
	d := &daemon{t: o.t, ctl: ctl, pid: cmd.Process.Pid}
	return d
}

func nsBase(ns string) string { return strings.ReplaceAll(ns, "/", "_") }

// blackHoles makes the addresses of 203.0.113.0/24 in the outer namespace
// black holes: routed to a neighbour that never answers, so that a dial
// there waits for its timeout.
func (o *outer) blackHoles() {
	o.t.Helper()
	o.blackHole()
	for _, args := range [][]string{
		{"neigh", "add", "192.0.2.2", "lladdr", "02:00:00:00:00:01", "dev", "tsbh0", "nud", "permanent"},
		{"route", "add", "203.0.113.0/24", "via", "192.0.2.2", "dev", "tsbh0"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", o.name}, args...)...).CombinedOutput(); err != nil {
			o.t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
}

// pyLiveServer answers "live" to every connection on argv[1]:argv[2],
// with a listen queue deep enough for any burst of the tests.
const pyLiveServer = `
import socket, sys, threading
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1024)
def serve(c):
    try:
        c.recv(100); c.sendall(b"live")
    except OSError:
        pass
    c.close()
while True:
    c, a = s.accept()
    threading.Thread(target=serve, args=(c,)).start()
`

// pyTimedConnects makes argv[3] connections to argv[1]:argv[2], argv[4]
// at a time, each sending a line and reading the
// answer to its end (so that every connection ends gracefully), and
// prints how many completed within argv[5] seconds.
const pyTimedConnects = `
import socket, sys, threading, time
host, port, total, par, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
ok = 0; worst = 0.0; errs = {}; lock = threading.Lock()
def worker(k):
    global ok, worst
    for i in range(k, total, par):
        t = time.time()
        try:
            s = socket.create_connection((host, port), timeout=limit + 5)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                b = s.recv(4096)
                if not b: break
                got += b
            s.close()
            dt = time.time() - t
            with lock:
                worst = max(worst, dt)
                if got and dt <= limit: ok += 1
        except OSError as e:
            with lock: errs[str(e)] = errs.get(str(e), 0) + 1
ts = [threading.Thread(target=worker, args=(k,)) for k in range(par)]
for t in ts: t.start()
for t in ts: t.join()
print("ok=%d worst=%.3f errs=%r" % (ok, worst, errs))
`

// TestBlackHolesDoNotStarveLiveDials: 64 black-hole destinations × 200
// SYNs (hping3 from the namespace) while 20 connections to a live server
// each complete in under a second; then the daemon is back to baseline.
func TestBlackHolesDoNotStarveLiveDials(t *testing.T) { engines(t, testBlackHolesDoNotStarveLiveDials) }

func testBlackHolesDoNotStarveLiveDials(t *testing.T, flags []string) {
	cienv.RequireTool(t, "hping3")
	o := newOuter(t)
	o.bg("python3", "-c", pyLiveServer, outerV4, "8000")
	o.waitTCP(outerV4, 8000)
	o.blackHoles()
	ns := ncNamespace(t)
	d := o.startDaemon(ns, append([]string{"--serve", "none", "--connect-timeout", "5s"}, flags...)...)
	inNS(ns, 20*time.Second, nil, "python3", "-c", pyTimedConnects, outerV4, "8000", "5", "1", "5")
	base := d.usage()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			exec.CommandContext(ctx, "ip", "netns", "exec", ns, "hping3", "-q", "-S", "-p", "80", "-c", "200", "-i", "u2000",
				fmt.Sprintf("203.0.113.%d", 10+i)).Run()
		}()
	}
	time.Sleep(300 * time.Millisecond) // the holes fill the dial slots
	out, err := inNS(ns, 60*time.Second, nil, "python3", "-c", pyTimedConnects, outerV4, "8000", "20", "20", "1")
	st := d.stats()
	wg.Wait()
	t.Logf("live: %s; daemon: pending %d, evicted %d, busy %d", strings.TrimSpace(out), st["pending_dials"], st["dials_evicted"], st["dropped_busy"])
	if err != nil || !strings.HasPrefix(out, "ok=20 ") {
		t.Fatalf("20 live connections beside 64 black holes: %v %q; want all 20 within 1 s", err, out)
	}
	if st["dials_evicted"] == 0 && st["pending_dials"] < 200 {
		t.Fatalf("the black holes never filled the dial slots (%v): the test tests nothing", st)
	}
	d.backToBaseline(base)
}

// TestDNSFloodWithASilentUpstream: 100 000 queries to the DNS forwarder
// while its upstream answers nothing: queries beyond the limit are
// dropped and counted, the daemon holds no more than the limit allows,
// and once the upstream is one that answers a normal query is answered.
func TestDNSFloodWithASilentUpstream(t *testing.T) {
	o := newOuter(t)
	o.dnsmasq(outerV6)
	// A silent upstream: a socket that never reads.
	o.bg("python3", "-c", `import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("`+outerV4+`", 53))
time.sleep(3600)`)
	resolv := filepath.Join(o.dir, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver "+outerV4+"\n"), 0o644)
	ns := ncNamespace(t)
	d := o.startDaemon(ns, "--serve", "none", "--resolv-conf", resolv)
	base := d.usage()
	out, err := inNS(ns, 120*time.Second, nil, "python3", "-c", `
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
q = b"\x04name\x04test\x00\x00\x01\x00\x01"
sent = 0
for i in range(100000):
    try:
        s.sendto(struct.pack(">HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0) + q, ("10.0.2.3", 53)); sent += 1
    except OSError:
        pass
print("sent=%d" % sent)
`)
	st := d.stats()
	during := d.usage()
	t.Logf("flood: %s; daemon: %d queries, %d dropped; %v", strings.TrimSpace(out), st["dns_queries"], st["dns_dropped"], during)
	if err != nil || st["dns_dropped"] == 0 {
		t.Fatalf("flood: %v %q; stats %v: want queries dropped at the limit", err, out, st)
	}
	if during.goroutines > base.goroutines+256+64 {
		t.Fatalf("%d goroutines during the flood (baseline %d): the query limit does not hold", during.goroutines, base.goroutines)
	}
	os.WriteFile(resolv, []byte("nameserver "+outerV6+"\n"), 0o644)
	// As a resolver does, try again when a query goes unanswered (the
	// flood's last queries hold the slots for a few seconds).
	var q string
	for try := 0; try < 3 && strings.TrimSpace(q) != "udp 10.0.2.50 rcode=0"; try++ {
		q, _ = inNS(ns, 30*time.Second, nil, "python3", "-c", pyDNSQuery, "10.0.2.3", "name.test", "udp")
	}
	if strings.TrimSpace(q) != "udp 10.0.2.50 rcode=0" {
		t.Fatalf("a normal query after the flood, three tries: %q", q)
	}
	d.backToBaseline(base)
}

// TestSYNFloodWithSpoofedSources: hping3 floods SYNs with random source
// addresses from the namespace at the stack's echo service and at a
// relayed destination, both at once, for 10 s; meanwhile at least 95 of
// 100 legitimate connections to each complete within 3 s. Frames from
// sources that are not the namespace's are dropped as they are read,
// before the stack parses them (once they cost a goroutine each and
// left 45 of 100 legitimate connections).
func TestSYNFloodWithSpoofedSources(t *testing.T) { engines(t, testSYNFloodWithSpoofedSources) }

func testSYNFloodWithSpoofedSources(t *testing.T, flags []string) {
	cienv.RequireTool(t, "hping3")
	o := newOuter(t)
	o.bg("python3", "-c", pyLiveServer, outerV4, "8000")
	o.waitTCP(outerV4, 8000)
	ns := ncNamespace(t)
	d := o.startDaemon(ns, append([]string{"--serve", "echo"}, flags...)...)
	inNS(ns, 20*time.Second, nil, "python3", "-c", pyTimedConnects, outerV4, "8000", "5", "1", "5")
	base := d.usage()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var floods sync.WaitGroup
	for _, target := range [][]string{{"10.0.2.2", "7"}, {outerV4, "8000"}} {
		floods.Add(1)
		go func() {
			defer floods.Done()
			exec.CommandContext(ctx, "ip", "netns", "exec", ns, "hping3", "-q", "-S", "--flood", "--rand-source", "-p", target[1], target[0]).Run()
		}()
	}
	time.Sleep(time.Second)
	results := map[string]string{}
	var mu sync.Mutex
	var legit sync.WaitGroup
	for _, target := range [][]string{{"10.0.2.2", "7"}, {outerV4, "8000"}} {
		legit.Add(1)
		go func() {
			defer legit.Done()
			out, _ := inNS(ns, 60*time.Second, nil, "python3", "-c", pyTimedConnects, target[0], target[1], "100", "4", "3")
			mu.Lock()
			results[target[0]] = strings.TrimSpace(out)
			mu.Unlock()
		}()
	}
	legit.Wait()
	st := d.stats()
	cancel()
	floods.Wait()
	t.Logf("under the flood: echo %q, relayed %q; daemon: %d spoofed frames dropped at the link, %d relayed", results["10.0.2.2"], results[outerV4], st["spoofed"], st["tcp_relayed"])
	for host, out := range results {
		var ok int
		fmt.Sscanf(out, "ok=%d", &ok)
		if ok < 95 {
			t.Errorf("%s: %q: want at least 95 of 100 within 3 s", host, out)
		}
	}
	if st["spoofed"] < 10000 {
		t.Errorf("%d spoofed frames dropped: the flood did not reach the daemon", st["spoofed"])
	}
	d.backToBaseline(base)
}

// TestPingFloodToABlackHole: pings to an address that never answers each
// hold a host ICMP socket for 5 s; beyond --max-pings they are dropped
// (as pings lost on the way) and counted, the daemon's descriptors stay
// bounded, and a ping to a live address works once the flood is over.
func TestPingFloodToABlackHole(t *testing.T) {
	o := newOuter(t)
	o.blackHoles()
	ns := ncNamespace(t)
	d := o.startDaemon(ns, "--serve", "none", "--max-pings", "16")
	base := d.usage()
	out, _ := inNS(ns, 30*time.Second, nil, "ping", "-q", "-i", "0.005", "-c", "400", "-W", "1", "203.0.113.9")
	during := d.usage()
	st := d.stats()
	t.Logf("%s; daemon: %d pings dropped; %v", strings.Join(strings.Fields(out), " "), st["pings_dropped"], during)
	if st["pings_dropped"] == 0 {
		t.Fatalf("no ping dropped at --max-pings 16 (stats %v)", st)
	}
	if during.fds > base.fds+16+4 {
		t.Fatalf("%d fds during the flood, %d before: the ping limit does not hold", during.fds, base.fds)
	}
	d.backToBaseline(base)
	if out, err := inNS(ns, 20*time.Second, nil, "ping", "-c", "1", "-W", "3", outerV4); err != nil {
		t.Fatalf("a ping after the flood: %v %s", err, out)
	}
}

// TestUDPForwardFlowsAreBounded: datagrams to a UDP port forward from 200
// host source ports make 200 flows; with --max-flows 50 the others are
// dropped and counted, and the stack's socket table stays bounded.
func TestUDPForwardFlowsAreBounded(t *testing.T) {
	o := newOuter(t)
	ns := ncNamespace(t)
	echo := exec.Command("ip", "netns", "exec", ns, "python3", "-c", `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 8082))
while True:
    b, a = s.recvfrom(2048); s.sendto(b, a)
`)
	if err := echo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Process.Kill(); echo.Wait() })
	waitListening(t, ns, nil, []string{"8082"})
	d := o.startDaemon(ns, "--serve", "none", "--max-flows", "50", "--udp-idle-timeout", "2s", "-p", "127.0.0.1:18082:8082/udp")
	base := d.usage()
	out, err := exec.Command("ip", "netns", "exec", o.name, "python3", "-c", `
import socket
import select, time
socks = []
for i in range(200):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"hi", ("127.0.0.1", 18082)); socks.append(s)
got = set(); end = time.time() + 3
while time.time() < end and len(got) < 200:
    r, _, _ = select.select(socks, [], [], 0.2)
    for s in r:
        s.recv(100); got.add(s)
print("answered", len(got))
`).CombinedOutput()
	st := d.stats()
	t.Logf("%s; daemon: forwarded %d, dropped at the limit %d, sockets %d", strings.TrimSpace(string(out)), st["forwarded"], st["dropped_busy"], st["sockets_in_use"])
	if err != nil || st["dropped_busy"] == 0 || st["forwarded"] > 50 || !strings.Contains(string(out), "answered 50") {
		t.Fatalf("200 sources at --max-flows 50: %v %s; stats %v", err, out, st)
	}
	if st["sockets_in_use"] > base.sockets+50 {
		t.Fatalf("%d sockets in use, %d before: the flow limit does not hold", st["sockets_in_use"], base.sockets)
	}
	d.backToBaseline(base)
}
