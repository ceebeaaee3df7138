// Package relayed tests the relay as a library: a daemon (package
// daemon) in the test process gives a namespace its network, and real
// kernel tools in the namespace reach servers the test runs. The test
// binary runs in a namespace of its own (nstest.Isolate), so the relay
// can reach nothing else.
package relayed

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/tests/nstest"
)

func TestMain(m *testing.M) { os.Exit(nstest.Isolate(m)) }

// serveHTTP serves h on addr in the test's namespace until the test ends.
func serveHTTP(t *testing.T, addr string, h http.Handler) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

// counters reads the daemon's counter table as its control socket does.
func counters(env *nstest.Relayed) map[string]uint64 {
	return relay.CounterMap(env.Daemon.Relay().Counters())
}

// serveTCP accepts connections on addr in the test's namespace and hands
// each to handle on a goroutine of its own, until the test ends; then it
// closes the listener and the connections and waits for the handlers.
func serveTCP(t *testing.T, addr string, handle func(net.Conn)) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
		wg     sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { defer c.Close(); handle(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// dialInside dials addr from a socket in env's namespace: the namespace's
// kernel makes the connection, as a tool's there would, and the relay
// carries it.
func dialInside(env *nstest.Relayed, network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := env.NS.Do(func() (err error) {
		c, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	return c, err
}

// TestRelayedDownloadAndUploadKeepEveryByte: curl in the namespace
// downloads 16 MiB from a server of the test and uploads them back, both
// through the relay; both ends check the SHA-256, and the counter table
// counted the bytes.
func TestRelayedDownloadAndUploadKeepEveryByte(t *testing.T) {
	engines(t, testDownloadAndUpload)
}

func testDownloadAndUpload(t *testing.T, cfg daemon.Config) {
	env := nstest.NewRelayed(t, cfg)
	blob := make([]byte, 16<<20)
	rand.Read(blob)
	sum := sha256.Sum256(blob)
	uploaded := make(chan string, 1)
	serveHTTP(t, net.JoinHostPort(nstest.OuterV4, "8000"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			uploaded <- fmt.Sprintf("%d %x %v", n, h.Sum(nil), err)
			return
		}
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(blob))
	}))
	url := "http://" + nstest.OuterV4 + ":8000/"
	got := env.MustRun(60*time.Second, nil, "sh", "-c", "curl -sS --max-time 50 "+url+" | tee /tmp/blob.$$ | sha256sum && curl -sS --max-time 50 --data-binary @/tmp/blob.$$ "+url+"; rm -f /tmp/blob.$$")
	if f := strings.Fields(got); len(f) == 0 || f[0] != hex.EncodeToString(sum[:]) {
		t.Fatalf("the download's SHA-256 is %q, want %x", got, sum)
	}
	if up, want := <-uploaded, fmt.Sprintf("%d %x <nil>", len(blob), sum); up != want {
		t.Fatalf("the server received %q, want %q", up, want)
	}
	c := counters(env)
	if c["bytes_down"] < uint64(len(blob)) || c["bytes_up"] < uint64(len(blob)) || c["tcp_relayed"] < 2 {
		t.Fatalf("counters %v: want both directions' 16 MiB and two TCP flows", c)
	}
	checkEngine(t, env, cfg)
}

// startDNSMasq runs dnsmasq on nstest.OuterV4:53 in the test's namespace
// until the test ends, answering for name.test: 10.0.2.50 and fd00::50.
// Without dnsmasq the test skips.
func startDNSMasq(t *testing.T) {
	t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		cienv.Skip(t, "needs dnsmasq")
	}
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	os.WriteFile(hosts, []byte("10.0.2.50 name.test\nfd00::50 name.test\n"), 0o644)
	dns := exec.Command(bin, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--addn-hosts="+hosts,
		"--local=/test/", "--listen-address="+nstest.OuterV4, "--bind-interfaces", "--port=53", "--user=root",
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"))
	if err := dns.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Process.Kill(); dns.Wait() })
}

// TestRelayedUDPPingAndDNS: UDP to both families, pings relayed (and a
// ping to nobody unanswered), names resolved through the DNS forwarder
// from a dnsmasq upstream named in the relay's resolv.conf.
func TestRelayedUDPPingAndDNS(t *testing.T) {
	startDNSMasq(t)
	engines(t, testUDPPingAndDNS)
}

func testUDPPingAndDNS(t *testing.T, cfg daemon.Config) {
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver "+nstest.OuterV4+"\n"), 0o644)
	echo, err := net.ListenUDP("udp", &net.UDPAddr{Port: 7000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := echo.ReadFromUDP(buf)
			if err != nil {
				return
			}
			echo.WriteToUDP(append([]byte("echo:"), buf[:n]...), from)
		}
	}()

	// At an MTU of 1500 the larger datagrams go in IP fragments both
	// ways.
	cfg.Relay.ResolvConf, cfg.MTU = resolv, 1500
	env := nstest.NewRelayed(t, cfg)
	script := fmt.Sprintf(`
set -e
for host in %s %s; do python3 -c '
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(3)
for i in range(3):
    s.sendto(b"q%%d" %% i, (sys.argv[1], 7000))
    print(s.recvfrom(100)[0].decode())
for n in (0, 1472, 4000, 30000):
    b = bytes(i * 7 %% 251 for i in range(n))
    s.sendto(b, (sys.argv[1], 7000))
    if s.recvfrom(65536)[0] != b"echo:" + b:
        sys.exit("a datagram of %%d bytes came back otherwise" %% n)
' $host; done
ping -c 2 -W 3 %s >/dev/null && echo ping4 ok
ping -6 -c 2 -W 3 %s >/dev/null && echo ping6 ok
ping -c 1 -W 2 198.51.100.77 >/dev/null || echo ping to nobody fails
python3 -c 'import socket; print(sorted({a[4][0] for a in socket.getaddrinfo("name.test", 80)}))'
`, nstest.OuterV4, nstest.OuterV6, nstest.OuterV4, nstest.OuterV6)
	out := env.MustRun(60*time.Second, nil, "sh", "-c", script)
	want := "echo:q0\necho:q1\necho:q2\necho:q0\necho:q1\necho:q2\nping4 ok\nping6 ok\nping to nobody fails\n['10.0.2.50', 'fd00::50']\n"
	if out != want {
		t.Fatalf("out:\n%s\nwant:\n%s", out, want)
	}
	c := counters(env)
	// One flow per address family, whether its datagrams came whole or
	// in fragments.
	if c["udp_relayed"] != 2 || c["pings_relayed"] < 4 || c["dns_answered"] < 1 {
		t.Fatalf("counters %v: want the 2 UDP flows, the pings and the DNS answers counted", c)
	}
	checkEngine(t, env, cfg)
}

// TestRelayedHostLoopbackAndDenyArePolicy: the host's loopback is
// reached at 10.0.2.2 only with HostLoopback; a Deny range is refused
// and counted as such.
func TestRelayedHostLoopbackAndDenyArePolicy(t *testing.T) {
	engines(t, testHostLoopbackAndDeny)
}

func testHostLoopbackAndDeny(t *testing.T, cfg daemon.Config) {
	serveHTTP(t, "127.0.0.1:9000", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "host loopback")
	}))
	serveHTTP(t, net.JoinHostPort(nstest.OuterV4, "9001"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "outer")
	}))
	deny := cfg
	deny.Relay.Deny = []netip.Prefix{netip.MustParsePrefix(nstest.OuterV4 + "/32")}
	closed := nstest.NewRelayed(t, deny)
	if r := closed.Run(20*time.Second, nil, "curl", "-s", "--max-time", "5", "http://10.0.2.2:9000/"); r.Err == nil {
		t.Fatalf("the host's loopback answered without HostLoopback: %q", r.Stdout)
	}
	if r := closed.Run(20*time.Second, nil, "curl", "-s", "--max-time", "5", "http://"+nstest.OuterV4+":9001/"); r.Err == nil {
		t.Fatalf("a denied address answered: %q", r.Stdout)
	}
	if c := counters(closed); c["refused"] == 0 {
		t.Fatalf("counters %v: the denied connection was not counted as refused", c)
	}
	loop := cfg
	loop.Relay.HostLoopback = true
	open := nstest.NewRelayed(t, loop)
	if got := open.MustRun(20*time.Second, nil, "curl", "-sS", "--max-time", "5", "http://10.0.2.2:9000/"); got != "host loopback" {
		t.Fatalf("with HostLoopback: %q", got)
	}
}
