package relayed

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/stack/nshost"
	"github.com/tapstack/tapstack/tests/nstest"
)

// blackHole makes an on-link address in the test's namespace that nobody
// answers ARP for, so that dials to it hang (until ARP gives up): a veth
// pair with 192.0.2.1/24 on one end, removed when the test ends. It
// returns the address.
func blackHole(t *testing.T) string {
	t.Helper()
	near, far := nshost.UniqueName("tsbh"), nshost.UniqueName("tsbh")
	if out, err := exec.Command("ip", "link", "add", near, "type", "veth", "peer", "name", far).CombinedOutput(); err != nil {
		t.Fatalf("ip link add %s: %v %s", near, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "del", near).CombinedOutput(); err != nil {
			t.Errorf("ip link del %s: %v %s", near, err, out)
		}
	})
	for _, args := range [][]string{
		{"addr", "add", "192.0.2.1/24", "dev", near},
		{"link", "set", near, "up"},
		{"link", "set", far, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	return "192.0.2.99"
}

// TestBlackHoleDoesNotStallOtherDials: ten dials to a black hole in
// progress do not hold up twenty dials to a server that answers, and
// they end as the host's did: "no route to host".
func TestBlackHoleDoesNotStallOtherDials(t *testing.T) { engines(t, testBlackHole) }

func testBlackHole(t *testing.T, cfg daemon.Config) {
	serveHTTP(t, net.JoinHostPort(nstest.OuterV4, "8000"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	bh := blackHole(t)
	cfg.Relay.ConnectTimeout = 15 * time.Second
	env := nstest.NewRelayed(t, cfg)
	script := fmt.Sprintf(`
import socket, threading, time
holes = []
errs = []
def hole():
    try:
        socket.create_connection((%q, 80), timeout=20)
    except OSError as e:
        errs.append(e.errno)
for i in range(10):
    t = threading.Thread(target=hole); t.start(); holes.append(t)
time.sleep(0.5)
start = time.time()
ok = [0]
def good():
    s = socket.create_connection((%q, 8000), timeout=10)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    if s.recv(100).startswith(b"HTTP/1.0 200"):
        ok[0] += 1
    s.close()
ts = [threading.Thread(target=good) for i in range(20)]
for t in ts: t.start()
for t in ts: t.join()
print("good=%%d in %%.1fs" %% (ok[0], time.time() - start))
for t in holes: t.join()
print("hole errno", sorted(set(errs)))
`, bh, nstest.OuterV4)
	r := env.Run(90*time.Second, nil, "python3", "-c", script)
	var good int
	var secs float64
	fmt.Sscanf(r.Stdout, "good=%d in %fs", &good, &secs)
	if r.Err != nil || good != 20 || secs > 5 {
		t.Fatalf("with 10 dials to a black hole: %q (%v, stderr %s); want 20 good dials within 5 s", r.Stdout, r.Err, r.Stderr)
	}
	// The host's "no route to host" (ARP failed) reaches the namespace as
	// an ICMP host unreachable: EHOSTUNREACH, not a refusal.
	if !strings.Contains(r.Stdout, "hole errno [113]") {
		t.Fatalf("dials to the black hole ended with %q, want EHOSTUNREACH (113)", r.Stdout)
	}
}

// TestRelay256MiBBothWays: a socket in the namespace sends 256 MiB to a
// server of the test, then receives 256 MiB from it, over two relayed TCP
// connections; what each end received hashes to what the other sent
// (SHA-256).
func TestRelay256MiBBothWays(t *testing.T) { engines(t, test256MiBBothWays) }

func test256MiBBothWays(t *testing.T, cfg daemon.Config) {
	const size = 256 << 20
	env := nstest.NewRelayed(t, cfg)
	addr := net.JoinHostPort(nstest.OuterV4, "9100")
	// The server: after a first byte "u", it reads the upload and answers
	// its hash; after "d", it sends size bytes and tells the test their
	// hash.
	sent := make(chan string, 1)
	serveTCP(t, addr, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(170 * time.Second))
		mode := make([]byte, 1)
		if _, err := io.ReadFull(c, mode); err != nil {
			return
		}
		h := sha256.New()
		if mode[0] == 'u' {
			io.Copy(h, io.LimitReader(c, size))
			fmt.Fprintf(c, "%x", h.Sum(nil))
			return
		}
		if _, err := io.Copy(io.MultiWriter(c, h), io.LimitReader(rand.NewChaCha8([32]byte{'d'}), size)); err != nil {
			sent <- err.Error()
			return
		}
		sent <- fmt.Sprintf("%x", h.Sum(nil))
	})

	c, err := dialInside(env, "tcp4", addr, 60*time.Second)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(170 * time.Second))
	h := sha256.New()
	c.Write([]byte("u"))
	if _, err := io.Copy(c, io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{'u'}), size), h)); err != nil {
		t.Fatalf("upload: %v", err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if want := fmt.Sprintf("%x", h.Sum(nil)); string(got) != want {
		t.Fatalf("upload of 256 MiB: the server received data hashing to %q (%v), want %s", got, err, want)
	}

	c, err = dialInside(env, "tcp4", addr, 60*time.Second)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(170 * time.Second))
	h.Reset()
	c.Write([]byte("d"))
	n, err := io.Copy(h, c)
	var want string
	select {
	case want = <-sent:
	case <-time.After(30 * time.Second):
		t.Fatalf("download: %d bytes (%v), and the server did not finish", n, err)
	}
	if got := fmt.Sprintf("%x", h.Sum(nil)); err != nil || n != size || got != want {
		t.Fatalf("download of 256 MiB: received %d bytes hashing to %s (%v); the server sent %s", n, got, err, want)
	}
}
