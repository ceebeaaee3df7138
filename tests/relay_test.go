package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/stack/netns"
	"github.com/tapstack/tapstack/stack/nshost"
	"github.com/tapstack/tapstack/tests/nstest"
)

// The relay tests run the daemon inside an outer namespace of their own:
// its only peers are the servers a test starts there, on 198.51.100.1 and
// 2001:db8::1 (addresses of the outer namespace's loopback), so a relay
// bug can never reach a real network.

const (
	outerV4 = "198.51.100.1"
	outerV6 = "2001:db8::1"
)

type outer struct {
	t    *testing.T
	name string
	dir  string
}

func newOuter(t *testing.T) *outer {
	t.Helper()
	nstest.Require(t)
	o := &outer{t: t, name: nshost.UniqueName("tsout-"), dir: t.TempDir()}
	os.Chmod(o.dir, 0o755)
	noteNetns(o.name)
	if out, err := exec.Command("ip", "netns", "add", o.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", o.name).Run() })
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", outerV4 + "/32", "dev", "lo"},
		{"-6", "addr", "add", outerV6 + "/128", "dev", "lo", "nodad"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", o.name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	return o
}

// bg runs a command in the outer namespace until the test ends.
func (o *outer) bg(name string, args ...string) {
	o.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", o.name, name}, args...)...)
	dieWithTest(cmd)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		o.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	o.t.Cleanup(func() {
		cancel()
		<-done
	})
}

// httpServer serves body at http://outer:port/ on both addresses.
func (o *outer) httpServer(port int, body string) {
	o.t.Helper()
	d := filepath.Join(o.dir, fmt.Sprintf("www%d", port))
	os.MkdirAll(d, 0o755)
	os.WriteFile(filepath.Join(d, "index.html"), []byte(body), 0o644)
	o.bg("python3", "-m", "http.server", "--bind", "::", "--directory", d, fmt.Sprint(port))
	o.waitTCP(outerV4, port)
}

// waitTCP waits until something listens on host:port in the outer
// namespace.
func (o *outer) waitTCP(host string, port int) {
	o.t.Helper()
	for i := 0; i < 100; i++ {
		if err := exec.Command("ip", "netns", "exec", o.name, "python3", "-c",
			fmt.Sprintf("import socket; socket.create_connection((%q, %d), timeout=1).close()", host, port)).Run(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	o.t.Fatalf("nothing listens on %s:%d in the outer namespace", host, port)
}

// run runs tapstack run in the outer namespace and returns its output and
// exit code.
func (o *outer) run(timeout time.Duration, flags []string, cmd ...string) (string, string, int) {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := append([]string{"netns", "exec", o.name, tapstackBin, "run"}, flags...)
	args = append(append(args, "--"), cmd...)
	c := exec.CommandContext(ctx, "ip", args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		o.t.Fatalf("tapstack run: %v", err)
	}
	return out.String(), errb.String(), code
}

func TestRunCurlThroughTheRelay(t *testing.T) { engines(t, testRunCurlThroughTheRelay) }

func testRunCurlThroughTheRelay(t *testing.T, flags []string) {
	o := newOuter(t)
	o.httpServer(8000, "hello through tapstack")
	for _, url := range []string{"http://" + outerV4 + ":8000/", "http://[" + outerV6 + "]:8000/"} {
		out, errs, code := o.run(30*time.Second, flags, "curl", "-sS", "--max-time", "10", url)
		if code != 0 || out != "hello through tapstack" {
			t.Fatalf("run curl %s: exit %d, out %q, stderr %q", url, code, out, errs)
		}
	}
	// Exit statuses pass through, and a refused port looks refused.
	_, _, code := o.run(30*time.Second, flags, "sh", "-c", "exit 42")
	if code != 42 {
		t.Fatalf("run sh -c 'exit 42': exit %d", code)
	}
	_, _, code = o.run(30*time.Second, flags, "curl", "-s", "--max-time", "5", "http://"+outerV4+":8009/")
	if code != 7 {
		t.Fatalf("curl to a closed port through the relay: exit %d, want 7 (connection refused)", code)
	}
	if netnsLeft(t, "tapstack-run-") {
		t.Fatal("a run namespace is left behind")
	}
}

func netnsLeft(t *testing.T, prefix string) bool {
	entries, _ := os.ReadDir(netns.Dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			return true
		}
	}
	return false
}

// A black hole: an on-link address in the outer namespace that nobody
// answers ARP for, so dials to it hang.
func (o *outer) blackHole() string {
	o.t.Helper()
	for _, args := range [][]string{
		{"link", "add", "tsbh0", "type", "veth", "peer", "name", "tsbh1"},
		{"addr", "add", "192.0.2.1/24", "dev", "tsbh0"},
		{"link", "set", "tsbh0", "up"},
		{"link", "set", "tsbh1", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", o.name}, args...)...).CombinedOutput(); err != nil {
			o.t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	return "192.0.2.99"
}

const pyBulkServer = `
import hashlib, socket, sys, threading
size = int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9100)); s.listen(4)
def serve(c):
    mode = c.recv(1)
    if mode == b"u":  # the client uploads; answer the hash
        h = hashlib.sha256(); n = 0
        while n < size:
            b = c.recv(1 << 20)
            if not b: break
            h.update(b); n += len(b)
        c.sendall(h.hexdigest().encode())
    else:  # download: a hash line, then the data
        data = bytes(range(256)) * (size // 256)
        c.sendall(hashlib.sha256(data).hexdigest().encode() + b"\n")
        c.sendall(data)
    c.close()
while True:
    c, a = s.accept()
    threading.Thread(target=serve, args=(c,)).start()
`

const pyBulkClient = `
import hashlib, socket, sys
host, size = sys.argv[1], int(sys.argv[2])
data = bytes(range(256)) * (size // 256)
s = socket.create_connection((host, 9100), timeout=60)
s.sendall(b"u"); s.sendall(data); s.shutdown(socket.SHUT_WR)
got = s.recv(100).decode()
print("up", got == hashlib.sha256(data).hexdigest())
s = socket.create_connection((host, 9100), timeout=60)
s.sendall(b"d")
f = s.makefile("rb")
want = f.readline().strip().decode()
h = hashlib.sha256(); n = 0
while True:
    b = f.read(1 << 20)
    if not b: break
    h.update(b); n += len(b)
print("down", h.hexdigest() == want and n == size)
`

// upIn runs tapstack up inside the outer namespace for the namespace ns.
func (o *outer) upIn(args ...string) (*exec.Cmd, *bytes.Buffer, <-chan error) {
	o.t.Helper()
	var errb bytes.Buffer
	c, done := o.upInTo(&errb, args...)
	return c, &errb, done
}

// upInTo is upIn with the daemon's stderr going to errw.
func (o *outer) upInTo(errw io.Writer, args ...string) (*exec.Cmd, <-chan error) {
	o.t.Helper()
	c := exec.Command("ip", append([]string{"netns", "exec", o.name, tapstackBin, "up"}, args...)...)
	dieWithTest(c)
	c.Stderr = errw
	stdout, _ := c.StdoutPipe()
	if err := c.Start(); err != nil {
		o.t.Fatal(err)
	}
	done := make(chan error, 1)
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		r := false
		for sc.Scan() {
			if !r && strings.HasPrefix(sc.Text(), "ready") {
				r = true
				ready <- true
			}
		}
		if !r {
			ready <- false
		}
		io.Copy(io.Discard, stdout)
		done <- c.Wait()
	}()
	o.t.Cleanup(func() {
		if c.ProcessState == nil {
			c.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				c.Process.Kill()
			}
		}
	})
	select {
	case ok := <-ready:
		if !ok {
			o.t.Fatalf("tapstack up exited: %s", errw)
		}
	case <-time.After(20 * time.Second):
		o.t.Fatalf("tapstack up not ready: %s", errw)
	}
	return c, done
}

func TestUpRelaysForwardsAndNoticesDeletion(t *testing.T) {
	engines(t, testUpRelaysForwardsAndNoticesDeletion)
}

func testUpRelaysForwardsAndNoticesDeletion(t *testing.T, flags []string) {
	o := newOuter(t)
	o.httpServer(8000, "via up")
	// The namespace is made here: one that up made inside ip netns exec's
	// private mount namespace would not be visible out here.
	ns := ncNamespace(t)
	ctl := filepath.Join(o.dir, "ctl.sock")
	_, errb, done := o.upIn(append([]string{"--netns", ns, "--serve", "none", "--control", ctl,
		"-p", "127.0.0.1:18080:8080", "-p", "[::1]:18081:8081",
		"-p", "127.0.0.1:18082:8082/udp", "-p", "[::1]:18083:8083/udp"}, flags...)...)
	// Through the relay from the namespace.
	out, err := inNS(ns, 20*time.Second, nil, "curl", "-sS", "--max-time", "10", "http://"+outerV4+":8000/")
	if err != nil || out != "via up" {
		t.Fatalf("curl through up: %v %q", err, out)
	}
	// Servers inside the namespace for the forwards.
	var wg sync.WaitGroup
	for _, srv := range []struct{ script, port string }{
		{pyTCPServer, "8080"}, {pyTCPServer, "8081"}, {pyUDPEcho, "8082"}, {pyUDPEcho, "8083"},
	} {
		args := []string{"4", srv.port}
		if srv.script == pyUDPEcho {
			args = []string{srv.port}
			if srv.port == "8083" {
				args = append(args, "6")
			}
		} else if srv.port == "8081" {
			args[0] = "6"
		}
		wg.Add(1)
		go func(script string, args []string) {
			defer wg.Done()
			inNS(ns, 20*time.Second, nil, "python3", append([]string{"-c", script}, args...)...)
		}(srv.script, args)
	}
	waitListening(t, ns, []string{"8080", "8081"}, []string{"8082", "8083"})
	check := func(name string, args ...string) string {
		out, err := exec.Command("ip", append([]string{"netns", "exec", o.name, name}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v %s", name, args, err, out)
		}
		return string(out)
	}
	for _, c := range []struct{ py, host, port, want string }{
		{`import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); s.sendall(b"tcp"); s.shutdown(1); print(s.recv(100).decode())`, "127.0.0.1", "18080", "got:tcp"},
		{`import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); s.sendall(b"tcp6"); s.shutdown(1); print(s.recv(100).decode())`, "::1", "18081", "got:tcp6"},
		{`import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.sendto(b"udp", (sys.argv[1], int(sys.argv[2]))); print(s.recv(100).decode())`, "127.0.0.1", "18082", "echo:udp"},
		{`import socket,sys; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(5); s.sendto(b"udp6", (sys.argv[1], int(sys.argv[2]))); print(s.recv(100).decode())`, "::1", "18083", "echo:udp6"},
	} {
		if got := strings.TrimSpace(check("python3", "-c", c.py, c.host, c.port)); got != c.want {
			t.Fatalf("forward %s:%s: %q, want %q", c.host, c.port, got, c.want)
		}
	}
	wg.Wait()
	// Forwards change at run time through the control socket.
	fwd := func(args ...string) (string, error) {
		out, err := exec.Command(tapstackBin, append([]string{"forward", "--control", ctl}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := fwd("ls"); err != nil || strings.Count(out, "\n") != 4 || !strings.Contains(out, "127.0.0.1:18082:8082/udp") {
		t.Fatalf("forward ls: %v %q", err, out)
	}
	if out, err := fwd("add", "127.0.0.1:18090:8080"); err != nil {
		t.Fatalf("forward add: %v %s", err, out)
	}
	if out, err := fwd("add", "127.0.0.1:18090:8080"); err == nil {
		t.Fatalf("a duplicate forward was added: %s", out)
	}
	if out, _ := fwd("ls"); !strings.Contains(out, "127.0.0.1:18090:8080/tcp") {
		t.Fatalf("forward ls after add: %q", out)
	}
	if out, err := fwd("rm", "127.0.0.1:18090:8080/tcp"); err != nil {
		t.Fatalf("forward rm: %v %s", err, out)
	}
	if out, _ := fwd("ls"); strings.Contains(out, "18090") {
		t.Fatalf("forward ls after rm: %q", out)
	}
	if fi, err := os.Stat(ctl); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v", fi, err)
	}
	// Deleting the namespace stops the daemon.
	exec.Command("ip", "netns", "del", ns).Run()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("up after its namespace was deleted: %v, want exit status 1; %s", err, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("up did not notice its namespace was deleted")
	}
	if !strings.Contains(errb.String(), "was deleted") {
		t.Fatalf("stderr: %s", errb.String())
	}
	if _, err := os.Stat(ctl); err == nil {
		t.Fatal("the control socket is left behind")
	}
}

func TestUpByPID(t *testing.T) {
	o := newOuter(t)
	o.httpServer(8000, "via pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	holder := exec.CommandContext(ctx, "ip", "netns", "exec", o.name, "unshare", "--net", "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	hdone := make(chan struct{})
	go func() { holder.Wait(); close(hdone) }()
	// ip netns exec replaces itself with unshare, which replaces itself
	// with sleep: the PID is the same.
	time.Sleep(300 * time.Millisecond)
	pid := holder.Process.Pid
	_, errb, done := o.upIn("--pid", fmt.Sprint(pid), "--serve", "none")
	out, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-n", "curl", "-sS", "--max-time", "10", "http://"+outerV4+":8000/").CombinedOutput()
	if err != nil || string(out) != "via pid" {
		t.Fatalf("curl in the process's namespace: %v %q", err, out)
	}
	holder.Process.Kill()
	<-hdone
	select {
	case err := <-done:
		if err != nil || !strings.Contains(errb.String(), "exited") {
			t.Fatalf("up after the process exited: %v; %s", err, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("up did not notice the process exited")
	}
}

func TestRunInUserNamespace(t *testing.T) { engines(t, testRunInUserNamespace) }

func testRunInUserNamespace(t *testing.T, flags []string) {
	o := newOuter(t)
	o.httpServer(8000, "hello from a user namespace")
	out, errs, code := o.run(30*time.Second, append([]string{"--userns"}, flags...), "sh", "-c",
		"cat /etc/resolv.conf; curl -sS --max-time 10 http://"+outerV4+":8000/; exit 9")
	if code != 9 || !strings.Contains(out, "nameserver 10.0.2.3") || !strings.HasSuffix(out, "hello from a user namespace") {
		t.Fatalf("run --userns: exit %d, out %q, stderr %q", code, out, errs)
	}
}

func TestRunWithoutRoot(t *testing.T) {
	o := newOuter(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		cienv.Skip(t, "needs setpriv (util-linux) to drop privileges")
	}
	tunForEveryone(t)
	o.httpServer(8000, "rootless")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "ip", "netns", "exec", o.name, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
		"env", "HOME=/", "XDG_RUNTIME_DIR=", tapstackBin, "run", "--", "curl", "-sS", "--max-time", "10", "http://"+outerV4+":8000/")
	out, err := c.CombinedOutput()
	if err != nil || string(out) != "rootless" {
		t.Fatalf("tapstack run as uid 65534: %v %q", err, out)
	}
}

// pyDNSQuery asks argv[1] for the A record of argv[2] over UDP or TCP
// (argv[3]) and prints the addresses.
const pyDNSQuery = `
import socket, struct, sys, random
server, name, proto = sys.argv[1], sys.argv[2], sys.argv[3]
qid = random.randrange(65536)
q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
for label in name.split("."):
    q += bytes([len(label)]) + label.encode()
q += b"\0" + struct.pack(">HH", 1, 1)
if proto == "tcp":
    s = socket.create_connection((server, 53), timeout=5)
    s.sendall(struct.pack(">H", len(q)) + q)
    n = struct.unpack(">H", s.recv(2))[0]
    r = b""
    while len(r) < n:
        r += s.recv(n - len(r))
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(q, (server, 53))
    r = s.recv(4096)
rid, flags, qd, an = struct.unpack(">HHHH", r[:8])
assert rid == qid, "id"
# Skip the question, then read A answers (compressed names: 2 bytes).
i = 12
while r[i] != 0:
    i += r[i] + 1
i += 5
out = []
for _ in range(an):
    i += 2
    typ, cls, ttl, rdlen = struct.unpack(">HHIH", r[i:i+10])
    i += 10
    if typ == 1:
        out.append(socket.inet_ntoa(r[i:i+4]))
    i += rdlen
print(proto, " ".join(out) if out else "none", "rcode=%d" % (flags & 15))
`

// waitListening waits until sockets in namespace ns listen on the TCP
// ports tcp and are bound to the UDP ports udp (python servers started
// with ip netns exec take a while to start on a loaded machine).
func waitListening(t *testing.T, ns string, tcp, udp []string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		missing := ""
		for _, c := range []struct {
			flag  string
			ports []string
		}{{"-Hltn", tcp}, {"-Hlun", udp}} {
			out, _ := exec.Command("ip", "netns", "exec", ns, "ss", c.flag).CombinedOutput()
			for _, p := range c.ports {
				if !strings.Contains(string(out), ":"+p+" ") {
					missing += " " + p
				}
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on port(s)%s in %s after 15 s", missing, ns)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tunForEveryone makes /dev/net/tun readable and writable by every user
// until the test ends (Debian makes it so; some containers and this
// machine do not), for the tests that drop root.
func tunForEveryone(t *testing.T) {
	t.Helper()
	fi, err := os.Stat("/dev/net/tun")
	if err != nil {
		cienv.Skip(t, "needs /dev/net/tun")
	}
	if mode := fi.Mode().Perm(); mode&0o006 != 0o006 {
		if err := os.Chmod("/dev/net/tun", mode|0o006); err != nil {
			cienv.Skip(t, fmt.Sprintf("cannot open /dev/net/tun to other users: %v", err))
		}
		t.Cleanup(func() { os.Chmod("/dev/net/tun", mode) })
	}
}
