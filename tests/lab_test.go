package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/lab"
	"github.com/tapstack/tapstack/stack/netns"
	"github.com/tapstack/tapstack/stack/nshost"
	"github.com/tapstack/tapstack/tests/nstest"
)

// The lab tests use package lab as a project testing its own programs
// would: through nstest.NewNetwork, with real programs (curl, python3,
// ping, dnsmasq) in the nodes and every byte that moves checked by its
// SHA-256.

// labNode adds a node of kind to n, or fails the test.
func labNode(t *testing.T, n *lab.Network, kind lab.NodeKind, name string) *lab.Node {
	t.Helper()
	add := map[lab.NodeKind]func(string) (*lab.Node, error){lab.Host: n.AddHost, lab.Router: n.AddRouter, lab.Switch: n.AddSwitch}[kind]
	nd, err := add(name)
	if err != nil {
		t.Fatal(err)
	}
	return nd
}

// labConnect joins a and b, or fails the test.
func labConnect(t *testing.T, n *lab.Network, a, b *lab.Node, opts lab.LinkOptions) *lab.Link {
	t.Helper()
	l, err := n.Connect(a, b, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// labBG runs a command in nd until the test ends; what it printed is
// logged if the test failed.
func labBG(t *testing.T, nd *lab.Node, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := nd.Command(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() && out.Len() > 0 {
			t.Logf("%s in %s printed:\n%s", name, nd.Name(), out.String())
		}
	})
}

// labWaitPort waits until something listens on addr in nd.
func labWaitPort(t *testing.T, nd *lab.Node, network, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := nd.WaitPort(ctx, network, addr); err != nil {
		t.Fatalf("nothing listens on %s %s in %s: %v", network, addr, nd.Name(), err)
	}
}

// labBlob writes size random bytes to a file blob in a directory of its
// own and returns the directory and the bytes' SHA-256 in hex.
func labBlob(t *testing.T, size int) (dir, sum string) {
	t.Helper()
	dir = t.TempDir()
	os.Chmod(dir, 0o755)
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(filepath.Join(dir, "blob"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return dir, hex.EncodeToString(s[:])
}

// labServeBlob serves size random bytes as http://<nd>:8000/blob from a
// python3 HTTP server in nd, and returns their SHA-256 in hex.
func labServeBlob(t *testing.T, nd *lab.Node, size int) string {
	t.Helper()
	dir, sum := labBlob(t, size)
	labBG(t, nd, "python3", "-m", "http.server", "--bind", "::", "--directory", dir, "8000")
	labWaitPort(t, nd, "tcp", "[::]:8000")
	return sum
}

// labFetch downloads url with curl in nd and returns the SHA-256 of
// what arrived, in hex, and its length; curl's failure fails the test.
func labFetch(t *testing.T, nd *lab.Node, timeout time.Duration, url string) (string, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := nd.Command(ctx, "curl", "-sS", "--fail", "--max-time", fmt.Sprint(int(timeout/time.Second)-1), url)
	h := sha256.New()
	cw := &countWriter{w: h}
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = cw, &errb
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("curl %s in %s: %v (after %v, %d bytes)\n%s", url, nd.Name(), err, time.Since(start).Round(time.Millisecond), cw.n, errb.String())
	}
	t.Logf("curl %s in %s: %d bytes in %v", url, nd.Name(), cw.n, time.Since(start).Round(time.Millisecond))
	return hex.EncodeToString(h.Sum(nil)), cw.n
}

// countWriter counts what passes through it to w.
type countWriter struct {
	w hash.Hash
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	c.n += int64(len(b))
	return c.w.Write(b)
}

// TestLabDownloadAcrossALossyWire: a client, a router and a server; the
// client's link to the router is a tapstack wire losing 5 % of frames
// each way (seeded, so a failure replays), the router's link to the
// server a veth. curl in the client downloads 8 MiB from the server by
// its name, whole.
func TestLabDownloadAcrossALossyWire(t *testing.T) {
	cienv.RequireTool(t, "curl", "python3")
	n := nstest.NewNetwork(t, lab.Options{Seed: 28})
	client := labNode(t, n, lab.Host, "client")
	router := labNode(t, n, lab.Router, "router")
	server := labNode(t, n, lab.Host, "server")
	wire := labConnect(t, n, client, router, lab.LinkOptions{Kind: lab.Wire, Impair: "loss=5%"})
	labConnect(t, n, router, server, lab.LinkOptions{})

	sum := labServeBlob(t, server, 8<<20)
	got, size := labFetch(t, client, 60*time.Second, "http://server:8000/blob")
	if got != sum || size != 8<<20 {
		t.Fatalf("the download's SHA-256 is %s (%d bytes), want %s (%d bytes)", got, size, sum, 8<<20)
	}
	there, back := wire.Stats()
	t.Logf("the wire lost %d of %d frames towards the router, %d of %d back", there.Dropped, there.Frames, back.Dropped, back.Frames)
	if there.Dropped == 0 || back.Dropped == 0 {
		t.Errorf("the lossy wire lost nothing: %+v, %+v", there, back)
	}
}

// labBroadcast returns the directed broadcast address of the IPv4 subnet
// p is in.
func labBroadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

// labRecvPy binds UDP port argv[1] on every address, says "ready", waits
// up to 10 s for a datagram, then half a second for more, and prints the
// number of datagrams, the first one's SHA-256 and its source.
const labRecvPy = `
import hashlib, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(sys.argv[1])))
print("ready", flush=True)
s.settimeout(10)
b, a = s.recvfrom(65536)
got = [hashlib.sha256(b).hexdigest()]
s.settimeout(0.5)
try:
    while True:
        b2, _ = s.recvfrom(65536)
        got.append(hashlib.sha256(b2).hexdigest())
except socket.timeout:
    pass
print(len(got), got[0], a[0], flush=True)
`

// labSendBroadcastPy sends one datagram of 1200 random bytes with
// SO_BROADCAST to argv[1]:argv[2] and prints its SHA-256.
const labSendBroadcastPy = `
import hashlib, os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
d = os.urandom(1200)
s.sendto(d, (sys.argv[1], int(sys.argv[2])))
print(hashlib.sha256(d).hexdigest(), flush=True)
`

// labPy runs a python3 script in nd in the background. Its ready
// function waits for the script's "ready" line, its wait function for
// the rest of its output (at most 20 s after the start).
func labPy(t *testing.T, nd *lab.Node, script string, args ...string) (ready func(), wait func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	cmd := nd.Command(ctx, "python3", append([]string{"-u", "-c", script}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	readyc := make(chan bool, 1)
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		said := false
		for sc.Scan() {
			if !said && sc.Text() == "ready" {
				said = true
				readyc <- true
				continue
			}
			out.WriteString(sc.Text() + "\n")
		}
		cmd.Wait()
		close(readyc)
	}()
	t.Cleanup(func() { cancel(); <-done })
	ready = func() {
		t.Helper()
		if !<-readyc {
			<-done
			t.Fatalf("python3 in %s never got ready: %s", nd.Name(), stderr.String())
		}
	}
	wait = func() string {
		<-done
		if out.Len() == 0 {
			return stderr.String()
		}
		return out.String()
	}
	return ready, wait
}

// TestLabSwitchBroadcast: four hosts on a switch, two by veth and two
// by tapstack wires. A datagram one sends to the subnet's broadcast
// address reaches each of the other three once, byte for byte; two of
// them ping each other by name, over IPv4 and IPv6.
func TestLabSwitchBroadcast(t *testing.T) {
	cienv.RequireTool(t, "python3", "ping")
	n := nstest.NewNetwork(t, lab.Options{})
	sw := labNode(t, n, lab.Switch, "sw")
	var hosts []*lab.Node
	var links []*lab.Link
	for i, kind := range []lab.LinkKind{lab.Veth, lab.Wire, lab.Veth, lab.Wire} {
		h := labNode(t, n, lab.Host, fmt.Sprintf("h%d", i+1))
		hosts = append(hosts, h)
		links = append(links, labConnect(t, n, h, sw, lab.LinkOptions{Kind: kind}))
	}
	var p netip.Prefix
	for _, a := range links[0].Addrs(hosts[0]) {
		if a.Addr().Is4() {
			p = a
		}
	}
	if !p.IsValid() {
		t.Fatalf("h1 has no IPv4 address on the switch: %v", links[0].Addrs(hosts[0]))
	}
	bcast := labBroadcast(p)

	var readies []func()
	var waits []func() string
	for _, h := range hosts[1:] {
		ready, wait := labPy(t, h, labRecvPy, "4242")
		readies, waits = append(readies, ready), append(waits, wait)
	}
	for _, ready := range readies {
		ready()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := hosts[0].Command(ctx, "python3", "-c", labSendBroadcastPy, bcast.String(), "4242").CombinedOutput()
	if err != nil {
		t.Fatalf("broadcast to %v from h1: %v\n%s", bcast, err, out)
	}
	sent := strings.TrimSpace(string(out))
	for i, wait := range waits {
		got := strings.Fields(wait())
		want := []string{"1", sent, p.Addr().String()}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("h%d received %q, want one datagram %s from %s", i+2, got, sent, p.Addr())
		}
	}

	for _, fam := range []string{"-4", "-6"} {
		out, err := hosts[2].Command(ctx, "ping", fam, "-c", "3", "-i", "0.2", "-W", "2", "h2").CombinedOutput()
		if err != nil || !strings.Contains(string(out), " 0% packet loss") {
			t.Errorf("ping %s h2 from h3: %v\n%s", fam, err, out)
		}
	}
}

// labOutside is a namespace outside the lab joined to the test process's
// own by a veth: the server an uplink reaches. Its address and the test
// process's end are a /30 picked at random in 198.18.0.0/15 (the
// benchmarking range), so no other route of the test process's namespace
// leads there.
type labOutside struct {
	ns   string
	addr netip.Addr
}

func newLabOutside(t *testing.T) *labOutside {
	t.Helper()
	ns := nshost.UniqueName("tslabo-")
	host := nshost.UniqueName("tslo")
	var r [2]byte
	rand.Read(r[:])
	base := netip.AddrFrom4([4]byte{198, 18 + r[0]&1, r[1], byte(4 * (1 + int(r[0]>>1)%62))})
	mine := base.Next()
	theirs := mine.Next()
	noteNetns(ns)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", host).Run()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	for _, args := range [][]string{
		{"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"addr", "add", mine.String() + "/30", "dev", host},
		{"link", "set", host, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "addr", "add", theirs.String() + "/30", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	return &labOutside{ns: ns, addr: theirs}
}

// bg runs a command in the outside namespace until the test ends.
func (o *labOutside) bg(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", o.ns, name}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() && out.Len() > 0 {
			t.Logf("%s outside printed:\n%s", name, out.String())
		}
	})
}

// TestLabUplinkReachesAServerByName: a router with a NAT uplink (a
// tapstack daemon in the test process) and a host behind it reach a
// server outside the lab by a name only dnsmasq outside knows, through
// the uplink's DNS forwarder, and download 1 MiB from it whole.
func TestLabUplinkReachesAServerByName(t *testing.T) {
	cienv.RequireTool(t, "curl", "python3", "dnsmasq")
	nstest.Require(t)
	o := newLabOutside(t)
	dir, sum := labBlob(t, 1<<20)
	hosts := filepath.Join(t.TempDir(), "hosts")
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(hosts, []byte(o.addr.String()+" server.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(resolv, []byte("nameserver "+o.addr.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o.bg(t, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--addn-hosts="+hosts, "--local=/test/", "--listen-address="+o.addr.String(), "--bind-interfaces",
		"--port=53", "--user=root", "--pid-file="+filepath.Join(dir, "..", "dnsmasq.pid"))
	o.bg(t, "python3", "-m", "http.server", "--bind", o.addr.String(), "--directory", dir, "8000")

	n := nstest.NewNetwork(t, lab.Options{})
	gw := labNode(t, n, lab.Router, "gw")
	pc := labNode(t, n, lab.Host, "pc")
	labConnect(t, n, pc, gw, lab.LinkOptions{Kind: lab.Wire})
	up, err := n.AddUplink(gw, lab.UplinkOptions{ResolvConf: resolv})
	if err != nil {
		t.Fatal(err)
	}
	if up.Daemon() == nil {
		t.Fatal("the uplink has no daemon")
	}
	// dnsmasq and the server were started before the lab was built;
	// wait for both from the test process's side of the veth.
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := exec.Command("ip", "netns", "exec", o.ns, "ss", "-Hltun").CombinedOutput()
		if err == nil && strings.Contains(string(out), o.addr.String()+":8000 ") && strings.Contains(string(out), o.addr.String()+":53 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dnsmasq or the server does not listen outside:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, nd := range []*lab.Node{gw, pc} {
		got, size := labFetch(t, nd, 30*time.Second, "http://server.test:8000/blob")
		if got != sum {
			t.Errorf("%s downloaded %d bytes with SHA-256 %s, want %s", nd.Name(), size, got, sum)
		}
	}
	// Closing early is what a test may do; the cleanup's Close is then
	// a no-op.
	if err := n.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if left := labLeftovers(t, n.Name()); len(left) > 0 {
		t.Errorf("the network with an uplink left %v", left)
	}
}

// labT is a T for nstest.NewNetwork that records a failure instead of
// failing the test that runs it: the scenario of a failing sub-test,
// checked from outside. Its cleanups run, last first, when Finish is
// called, as testing runs them.
type labT struct {
	t        *testing.T
	mu       sync.Mutex
	failed   bool
	logs     []string
	cleanups []func()
}

func (l *labT) Helper() {}
func (l *labT) Logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.logs = append(l.logs, fmt.Sprintf(format, args...))
}
func (l *labT) Errorf(format string, args ...any) {
	l.Logf(format, args...)
	l.mu.Lock()
	l.failed = true
	l.mu.Unlock()
}
func (l *labT) Fatalf(format string, args ...any) {
	l.Errorf(format, args...)
	runtime.Goexit()
}
func (l *labT) Skip(args ...any) {
	l.t.Skip(args...) // not reached: the caller checked nstest.Missing
}
func (l *labT) Cleanup(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cleanups = append(l.cleanups, f)
}
func (l *labT) Failed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// run runs f as a test body on a goroutine of its own (so that Fatalf
// can end it), then the cleanups.
func (l *labT) run(f func(*labT)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(l)
	}()
	<-done
	for i := len(l.cleanups) - 1; i >= 0; i-- {
		l.cleanups[i]()
	}
}

// labScenario is what the recorded sub-test did: its network's name and
// its links' captures.
type labScenario struct {
	name     string
	captures []string
	sum      string
}

// labCapturedScenario builds a host, a router and a host (a wire and a
// veth), sends 64 KiB over TCP port 9 across both and checks it arrived,
// then fails when fail is set.
func labCapturedScenario(t *testing.T, lt *labT, fail bool) labScenario {
	var sc labScenario
	lt.run(func(lt *labT) {
		n := nstest.NewNetwork(lt, lab.Options{})
		sc.name = n.Name()
		a, err := n.AddHost("a")
		if err != nil {
			lt.Fatalf("%v", err)
		}
		r, err := n.AddRouter("r")
		if err != nil {
			lt.Fatalf("%v", err)
		}
		b, err := n.AddHost("b")
		if err != nil {
			lt.Fatalf("%v", err)
		}
		for _, ln := range [][2]*lab.Node{{a, r}, {r, b}} {
			kind := lab.Wire
			if ln[0] == r {
				kind = lab.Veth
			}
			l, err := n.Connect(ln[0], ln[1], lab.LinkOptions{Kind: kind})
			if err != nil {
				lt.Fatalf("%v", err)
			}
			sc.captures = append(sc.captures, l.CapturePath())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		recv := b.Command(ctx, "python3", "-c", `
import hashlib, socket
s = socket.create_server(("", 9), family=socket.AF_INET6, dualstack_ipv6=True)
c, _ = s.accept()
h = hashlib.sha256()
while True:
    d = c.recv(65536)
    if not d:
        break
    h.update(d)
print(h.hexdigest())
`)
		var got bytes.Buffer
		recv.Stdout, recv.Stderr = &got, &got
		if err := recv.Start(); err != nil {
			lt.Fatalf("%v", err)
		}
		waited := false
		defer func() {
			if !waited {
				cancel()
				recv.Wait()
			}
		}()
		if err := b.WaitPort(ctx, "tcp", "[::]:9"); err != nil {
			lt.Fatalf("%v", err)
		}
		payload := make([]byte, 64<<10)
		rand.Read(payload)
		s := sha256.Sum256(payload)
		sc.sum = hex.EncodeToString(s[:])
		send := a.Command(ctx, "python3", "-c", `
import socket, sys
c = socket.create_connection(("b", 9), timeout=10)
c.sendall(sys.stdin.buffer.read())
c.close()
`)
		send.Stdin = bytes.NewReader(payload)
		if out, err := send.CombinedOutput(); err != nil {
			lt.Fatalf("send from a: %v %s", err, out)
		}
		waited = true
		if err := recv.Wait(); err != nil {
			lt.Fatalf("receive in b: %v %s", err, got.String())
		}
		if strings.TrimSpace(got.String()) != sc.sum {
			lt.Fatalf("b received SHA-256 %q, want %s", got.String(), sc.sum)
		}
		if fail {
			lt.Errorf("failing on purpose")
		}
	})
	if lt.Failed() != fail {
		t.Fatalf("the scenario failed=%v, want %v:\n%s", lt.Failed(), fail, strings.Join(lt.logs, "\n"))
	}
	if sc.name == "" || len(sc.captures) != 2 || sc.captures[0] == "" || sc.captures[1] == "" {
		t.Fatalf("the scenario's network %q has captures %q:\n%s", sc.name, sc.captures, strings.Join(lt.logs, "\n"))
	}
	return sc
}

// labLeftovers lists what a network called name left behind: its
// namespaces, their /etc/netns directories, files of the temporary
// directory (an uplink's control socket) and interfaces in the test
// process's namespace whose names start with name.
func labLeftovers(t *testing.T, name string) []string {
	var left []string
	for _, dir := range []string{netns.Dir, "/etc/netns", os.TempDir()} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), name+"-") || e.Name() == name {
				left = append(left, filepath.Join(dir, e.Name()))
			}
		}
	}
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(strings.TrimSuffix(f[1], ":"), name) {
			left = append(left, "interface "+f[1])
		}
	}
	return left
}

// labFindCapture finds the capture called like path: where it was
// written, or in the directory the recorded test was told its captures
// are kept in.
func labFindCapture(lt *labT, path string) string {
	if _, err := os.Stat(path); err == nil {
		return path
	}
	for _, line := range lt.logs {
		for _, f := range strings.Fields(line) {
			if !filepath.IsAbs(f) {
				continue
			}
			p := filepath.Join(f, filepath.Base(path))
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	return ""
}

// TestLabFailingTestKeepsItsCaptures: a test that fails leaves the pcap
// of each link of its network, readable by tshark and holding the
// test's traffic, and nothing else of its network; a test that passes
// leaves nothing at all. The tests run with a T that records their
// failure, so that this one does not fail with them.
func TestLabFailingTestKeepsItsCaptures(t *testing.T) {
	cienv.RequireTool(t, "python3", "tshark")
	nstest.Require(t)

	lt := &labT{t: t}
	sc := labCapturedScenario(t, lt, true)
	var kept []string
	for _, c := range sc.captures {
		p := labFindCapture(lt, c)
		if p == "" {
			t.Fatalf("the failed test's capture %s is gone:\n%s", c, strings.Join(lt.logs, "\n"))
		}
		kept = append(kept, p)
	}
	dir := filepath.Dir(kept[0])
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, p := range kept {
		// tshark reads the whole capture, and the segments to port 9
		// in it carry at least the 64 KiB sent.
		var stderr bytes.Buffer
		cmd := exec.Command("tshark", "-r", p, "-Y", "tcp.dstport == 9", "-T", "fields", "-e", "tcp.len")
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("tshark -r %s: %v\n%s", p, err, stderr.String())
		}
		total := 0
		for _, f := range strings.Fields(string(out)) {
			var v int
			fmt.Sscan(f, &v)
			total += v
		}
		t.Logf("%s: %d bytes of TCP payload to port 9", filepath.Base(p), total)
		if total < 64<<10 {
			t.Errorf("%s holds %d bytes of TCP payload to port 9, want the 65536 sent", p, total)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".pcap") {
			t.Errorf("the failed test left %s beside its captures", filepath.Join(dir, e.Name()))
		}
	}
	if left := labLeftovers(t, sc.name); len(left) > 0 {
		t.Errorf("the failed test's network %s left %v", sc.name, left)
	}

	lt = &labT{t: t}
	sc = labCapturedScenario(t, lt, false)
	for _, c := range sc.captures {
		if p := labFindCapture(lt, c); p != "" {
			t.Errorf("the passing test left its capture %s", p)
		}
		if _, err := os.Stat(filepath.Dir(c)); err == nil {
			t.Errorf("the passing test left its capture directory %s", filepath.Dir(c))
		}
	}
	if left := labLeftovers(t, sc.name); len(left) > 0 {
		t.Errorf("the passing test's network %s left %v", sc.name, left)
	}
}
