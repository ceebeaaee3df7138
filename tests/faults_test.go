package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/relay"
)

// pyHoldServer accepts connections on argv[1]:argv[2] and, for each,
// reads until it ends; it appends one line per ended connection to the
// file argv[3].
const pyHoldServer = `
import socket, sys, threading
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1024)
lock = threading.Lock()
def serve(c):
    n = 0
    try:
        while True:
            b = c.recv(65536)
            if not b: break
            n += len(b)
        how = "eof"
    except OSError as e:
        how = "reset"
    c.close()
    with lock, open(sys.argv[3], "a") as f:
        f.write("%s %d\n" % (how, n))
while True:
    c, a = s.accept()
    threading.Thread(target=serve, args=(c,)).start()
`

// pyHoldClients opens argv[3] connections to argv[1]:argv[2], prints
// "open" once all are established, and then, until killed, sends a byte
// on each every 100 ms, or nothing if argv[4] is "quiet".
const pyHoldClients = `
import socket, sys, time
socks = [socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) for i in range(int(sys.argv[3]))]
print("open", flush=True)
while True:
    if sys.argv[4:] == ["quiet"]:
        time.sleep(3600)
        continue
    for s in socks:
        try:
            s.send(b"x")
        except OSError:
            pass
    time.sleep(0.1)
`

// holdServer starts pyHoldServer on outerV4:9400 and returns the file
// where it writes a line per connection that ended, empty. (waitTCP's
// probe is a connection of its own: its line is awaited before the file
// is emptied, or it could come after and count as one of the test's.)
func (o *outer) holdServer() string {
	o.t.Helper()
	ended := filepath.Join(o.dir, "ended")
	o.bg("python3", "-c", pyHoldServer, outerV4, "9400", ended)
	o.waitTCP(outerV4, 9400)
	o.waitLines(ended, 1)
	os.WriteFile(ended, nil, 0o644)
	return ended
}

// holdFlows starts n flows from namespace ns to the hold server and
// returns once they are open; they run until the test ends, each sending
// a byte every 100 ms, or nothing if quiet.
func (o *outer) holdFlows(ns string, n int, quiet bool) {
	o.t.Helper()
	args := []string{"ip", "netns", "exec", ns, "python3", "-c", pyHoldClients, outerV4, "9400", fmt.Sprint(n)}
	if quiet {
		args = append(args, "quiet")
	}
	cmd := exec.Command(args[0], args[1:]...)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		o.t.Fatal(err)
	}
	o.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	buf := make([]byte, 5)
	if _, err := out.Read(buf); err != nil || string(buf[:4]) != "open" {
		o.t.Fatalf("%d flows did not open: %v %q", n, err, buf)
	}
}

// TestNamespaceDeletedDuring100Flows: deleting the namespace while 100
// relayed flows are open ends the daemon within a few seconds with status
// 1 and a line naming the namespace, and each host-side connection ends
// (the host server sees all 100 close).
func TestNamespaceDeletedDuring100Flows(t *testing.T) { engines(t, testNamespaceDeletedDuring100Flows) }

func testNamespaceDeletedDuring100Flows(t *testing.T, flags []string) {
	o := newOuter(t)
	ended := o.holdServer()
	ns := ncNamespace(t)
	_, errb, done := o.upIn(append([]string{"--netns", ns, "--serve", "none", "--control", filepath.Join(o.dir, "ctl")}, flags...)...)
	o.holdFlows(ns, 100, false)
	exec.Command("ip", "netns", "del", ns).Run()
	select {
	case err := <-done:
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 || !strings.Contains(errb.String(), "was deleted") {
			t.Fatalf("up after its namespace was deleted: %v; %s", err, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("up still runs 10 s after its namespace was deleted")
	}
	if lines := o.waitLines(ended, 100); len(lines) != 100 {
		t.Fatalf("%d host connections ended, want 100", len(lines))
	}
}

// TestSIGTERMDuring100Flows: SIGTERM while 100 relayed flows stay open:
// up refuses new flows, waits --drain-timeout for them, says how many
// were still sending, exits 0, and the host server sees all 100 end.
func TestSIGTERMDuring100Flows(t *testing.T) { engines(t, testSIGTERMDuring100Flows) }

func testSIGTERMDuring100Flows(t *testing.T, flags []string) {
	o := newOuter(t)
	ended := o.holdServer()
	ns := ncNamespace(t)
	cmd, errb, done := o.upIn(append([]string{"--netns", ns, "--serve", "none", "--control", filepath.Join(o.dir, "ctl"), "--drain-timeout", "2s"}, flags...)...)
	o.holdFlows(ns, 100, false)
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("up after SIGTERM: %v; %s", err, errb.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("up still runs 15 s after SIGTERM")
	}
	if d := time.Since(start); d < 2*time.Second || d > 8*time.Second {
		t.Fatalf("up took %v to stop; want the 2 s drain and a little more", d)
	}
	if !strings.Contains(errb.String(), "100 relayed connections still sending") {
		t.Fatalf("stderr does not say what the drain left: %s", errb.String())
	}
	if lines := o.waitLines(ended, 100); len(lines) != 100 {
		t.Fatalf("%d host connections ended, want 100", len(lines))
	}
}

// TestUpstreamDNSGoesAndComesBack: with the upstream server gone, a query
// goes unanswered (the resolver times out, as with any dead server); once
// it is back, queries are answered; a resolv.conf replaced by a rename
// (as NetworkManager does) is followed.
func TestUpstreamDNSGoesAndComesBack(t *testing.T) {
	o := newOuter(t)
	dnsmasq := o.dnsmasq
	resolv := filepath.Join(o.dir, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver "+outerV4+"\n"), 0o644)
	first := dnsmasq(outerV4)
	ns := ncNamespace(t)
	o.upIn("--netns", ns, "--serve", "none", "--resolv-conf", resolv, "--control", filepath.Join(o.dir, "ctl"))
	q := func() string {
		out, _ := inNS(ns, 20*time.Second, nil, "python3", "-c", pyDNSQuery, "10.0.2.3", "name.test", "udp")
		return strings.TrimSpace(out)
	}
	answered := func(what string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			got := q()
			if got == "udp 10.0.2.50 rcode=0" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %q", what, got)
			}
		}
	}
	answered("with the upstream up")
	first.Process.Kill()
	first.Wait()
	if got := q(); strings.HasPrefix(got, "udp 10.0.2.50") {
		t.Fatalf("answered with the upstream gone: %q", got)
	}
	second := dnsmasq(outerV4)
	answered("with the upstream back")
	// Replaced by a rename, naming a server on another address; the old
	// one is gone, so only a followed change can answer.
	second.Process.Kill()
	second.Wait()
	dnsmasq(outerV6)
	tmp := resolv + ".new"
	os.WriteFile(tmp, []byte("nameserver "+outerV6+"\n"), 0o644)
	if err := os.Rename(tmp, resolv); err != nil {
		t.Fatal(err)
	}
	answered("after resolv.conf was replaced")
}

// dnsmasq runs dnsmasq in the outer namespace on addr:53, serving the
// names of dnsmasqHosts, until the test ends (or the caller kills it).
func (o *outer) dnsmasq(addr string) *exec.Cmd {
	o.t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		cienv.Skip(o.t, "needs dnsmasq")
	}
	c := exec.Command("ip", "netns", "exec", o.name, bin, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--addn-hosts="+dnsmasqHosts(o.t), "--local=/test/", "--listen-address="+addr, "--bind-interfaces", "--port=53", "--user=root",
		"--pid-file="+filepath.Join(o.dir, "dnsmasq-"+addr+".pid"))
	if err := c.Start(); err != nil {
		o.t.Fatal(err)
	}
	o.t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	return c
}

// TestFlowEngineSleepsBesideIdleFlows: the flow engine's loop, reading
// the TAP itself, sleeps while 100 relayed connections are open and
// quiet (no timer runs for them), rather than waking on a cadence; the
// connections still carry data afterwards.
func TestFlowEngineSleepsBesideIdleFlows(t *testing.T) {
	if relay.DefaultEngine() != relay.EngineFlow {
		cienv.Skip(t, "tests: skipped: the flow engine needs SO_PEEK_OFF on TCP (Linux 6.9+)")
	}
	o := newOuter(t)
	o.holdServer()
	ns := ncNamespace(t)
	d := o.startDaemon(ns, "--relay-engine", "flow")
	o.holdFlows(ns, 100, true)
	time.Sleep(1500 * time.Millisecond) // the handshakes' timers run out (initial RTO: 1 s)
	before := d.stats()["engine_wakeups"]
	time.Sleep(2 * time.Second)
	st := d.stats()
	if st["active_flows"] < 100 {
		t.Fatalf("%d active flows, want the 100 held", st["active_flows"])
	}
	// A loop on a 5 ms cadence wakes 400 times in 2 s; a stray frame
	// (the namespace's IPv6 chatter) wakes this one a few times.
	n := st["engine_wakeups"] - before
	if n > 40 {
		t.Fatalf("the engine woke %d times in 2 s beside 100 idle flows", n)
	}
	t.Logf("the engine woke %d times in 2 s beside 100 idle flows", n)
	body := strings.Repeat("awake ", 1000)
	o.httpServer(8001, body)
	got, err := inNS(ns, 30*time.Second, nil, "curl", "-sS", "--max-time", "10", "http://"+outerV4+":8001/")
	if err != nil || got != body {
		t.Fatalf("a download beside the idle flows: %v, %d bytes, want %d", err, len(got), len(body))
	}
}
