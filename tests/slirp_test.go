package tests

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tapstack/tapstack/internal/cienv"
)

// slirpAPI sends one request to a slirp4netns API socket in the outer
// namespace's view (the socket is a file: no namespace needed).
func slirpAPI(t *testing.T, path, req string) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("api socket: %v", err)
	}
	defer c.Close()
	c.Write([]byte(req))
	c.(*net.UnixConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := bufio.NewReader(c).ReadString(0)
	return b
}

// TestSlirp4netnsCommandLine: tapstack as slirp4netns (a symlink) for the
// namespace of a process, as rootlesskit and podman start it: -c, -6,
// --mtu, -r, -e, --api-socket. The ready FD gets "1", the namespace
// reaches a server outside and the host's loopback at 10.0.2.2, a
// forward added through the API serves into the namespace and shows in
// tapstack forward ls, and closing the exit FD ends the daemon with 0.
func TestSlirp4netnsCommandLine(t *testing.T) {
	o := newOuter(t)
	o.bg("python3", "-c", pyLiveServer, outerV4, "8000")
	o.waitTCP(outerV4, 8000)
	o.bg("python3", "-c", pyLiveServer, "127.0.0.1", "8001")
	o.waitTCP("127.0.0.1", 8001)
	pid := slirpTarget(t, o)
	link := filepath.Join(o.dir, "slirp4netns")
	if err := os.Symlink(tapstackBin, link); err != nil {
		t.Fatal(err)
	}
	api := filepath.Join(o.dir, "api.sock")
	d := startSlirp(t, o, nil, link, "--configure", "--mtu=65520", "-6", "--api-socket", api, "-r", "3", "-e", "4", fmt.Sprint(pid), "tap0")
	exitW, done, out := d.exitW, d.done, d.out
	inTarget := func(args ...string) (string, error) {
		b, err := exec.Command("nsenter", append([]string{"-t", fmt.Sprint(pid), "-n"}, args...)...).CombinedOutput()
		return string(b), err
	}
	if got, err := inTarget("python3", "-c", pyTimedConnects, outerV4, "8000", "3", "1", "5"); err != nil || !strings.HasPrefix(got, "ok=3 ") {
		t.Fatalf("from the namespace to a server outside: %v %q", err, got)
	}
	if got, err := inTarget("python3", "-c", pyTimedConnects, "10.0.2.2", "8001", "1", "1", "5"); err != nil || !strings.HasPrefix(got, "ok=1 ") {
		t.Fatalf("from the namespace to the host's loopback at 10.0.2.2 (slirp4netns's default): %v %q", err, got)
	}
	if got, _ := inTarget("ip", "-o", "addr", "show", "tap0"); !strings.Contains(got, "10.0.2.100/24") || !strings.Contains(got, "fd00::100/64") {
		t.Fatalf("tap0 in the namespace: %s", got)
	}
	// A forward through the API into the namespace.
	srv := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-n", "python3", "-c", pyLiveServer, "0.0.0.0", "80")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	if got := slirpAPI(t, api, `{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 18080, "guest_port": 80}}`); got != `{"return":{"id":1}}` {
		t.Fatalf("add_hostfwd: %q", got)
	}
	var got string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		b, _ := exec.Command("ip", "netns", "exec", o.name, "python3", "-c", pyTimedConnects, "127.0.0.1", "18080", "1", "1", "5").CombinedOutput()
		if got = string(b); strings.HasPrefix(got, "ok=1 ") {
			break
		}
	}
	if !strings.HasPrefix(got, "ok=1 ") {
		t.Fatalf("through the forward: %q", got)
	}
	if got := slirpAPI(t, api, `{"execute": "list_hostfwd"}`); got != `{"entries":[{"id":1,"proto":"tcp","host_addr":"127.0.0.1","host_port":18080,"guest_addr":"10.0.2.100","guest_port":80}]}` {
		t.Fatalf("list_hostfwd: %q", got)
	}
	ls, err := exec.Command("ip", "netns", "exec", o.name, tapstackBin, "forward", "--control", fmt.Sprintf("/run/tapstack/pid-%d.sock", pid), "ls").CombinedOutput()
	if err != nil || !strings.Contains(string(ls), "127.0.0.1:18080:80/tcp") {
		t.Fatalf("tapstack forward ls: %v %s", err, ls)
	}
	if got := slirpAPI(t, api, `{"execute": "remove_hostfwd", "arguments": {"id": 1}}`); got != `{"return":{}}` {
		t.Fatalf("remove_hostfwd: %q", got)
	}
	// Closing the exit FD ends it.
	exitW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after the exit FD closed: %v; %s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after the exit FD closed; %s", out.String())
	}
}

func must[T any](v T, _ error) T { return v }

// slirpTarget starts a process with a network namespace of its own in
// o, as rootlesskit and podman have one, and returns its PID.
func slirpTarget(t *testing.T, o *outer) int {
	t.Helper()
	target := exec.Command("ip", "netns", "exec", o.name, "unshare", "--net", "sleep", "300")
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Process.Kill(); target.Wait() })
	pid := target.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		b, _ := os.Readlink("/proc/self/ns/net")
		if a != "" && a != b && strings.Contains(string(must(os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)))), "sleep") {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatal("the target process did not get a namespace of its own")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slirpDaemon is a running tapstack slirp4netns.
type slirpDaemon struct {
	cmd   *exec.Cmd
	exitW *os.File    // its exit FD: closing it ends the daemon
	done  chan error  // its exit
	out   *syncBuffer // its stdout and stderr
}

// said reports whether the daemon's output holds want within wait. Its
// output is copied from a pipe by os/exec, so what it wrote before it
// signalled ready may still be on its way.
func (d *slirpDaemon) said(want string, wait time.Duration) bool {
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		if strings.Contains(d.out.String(), want) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// syncBuffer is a bytes.Buffer that a running command may write while
// the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startSlirp runs bin (tapstack as slirp4netns) in o, through prefix (a
// setpriv command line, or nothing), with args, which must name -r 3 and
// may name -e 4, and waits for its ready FD to say 1. The daemon is ended
// when the test ends.
func startSlirp(t *testing.T, o *outer, prefix []string, bin string, args ...string) *slirpDaemon {
	t.Helper()
	readyR, readyW, _ := os.Pipe()
	exitR, exitW, _ := os.Pipe()
	cmd := exec.Command("ip", append(append(append([]string{"netns", "exec", o.name}, prefix...), bin), args...)...)
	d := &slirpDaemon{cmd: cmd, exitW: exitW, done: make(chan error, 1), out: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	cmd.ExtraFiles = []*os.File{readyW, exitR}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	exitR.Close()
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(func() {
		exitW.Close()
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	})
	ready := make(chan string, 1)
	go func() {
		b := make([]byte, 8)
		n, _ := readyR.Read(b)
		ready <- string(b[:n])
	}()
	select {
	case r := <-ready:
		if r != "1" {
			t.Fatalf("ready FD got %q, want 1; output: %s", r, d.out.String())
		}
	case err := <-d.done:
		t.Fatalf("slirp4netns exited: %v; %s", err, d.out.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("no ready signal in 20 s; %s", d.out.String())
	}
	return d
}

// exitsOne runs tapstack with args and checks that it exits 1 saying
// want (on one line only, if oneLine).
func exitsOne(t *testing.T, args []string, want string, oneLine bool) {
	t.Helper()
	b, err := exec.Command(tapstackBin, args...).CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 || !strings.Contains(string(b), want) || oneLine && strings.Count(strings.TrimSpace(string(b)), "\n") != 0 {
		t.Errorf("tapstack %v: %v, %q; want exit 1 saying %q", args, err, firstLine(string(b)), want)
	}
}

// TestSlirp4netnsBadArguments: bad arguments and a namespace that cannot
// be joined exit 1 with a message, as slirp4netns.
func TestSlirp4netnsBadArguments(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--mtu=99", "1"}, "MTU"},
		{[]string{"--bogus", "1"}, "unrecognized option"},
		{[]string{"--target-type=bess", "1"}, "only netns"},
		{[]string{"--macaddress=02:00:00:00:00:01", "1"}, "--configure"},
		// slirp4netns's own words, which its suite greps for.
		{[]string{"--cidr=24", "1"}, "invalid CIDR"},
		{[]string{"--cidr=foo", "1"}, "invalid CIDR"},
		{[]string{"--cidr=10.0.2.0", "1"}, "invalid CIDR"},
		{[]string{"--cidr=10.0.2.100/24", "1"}, "CIDR needs to be a network address like 10.0.2.0/24, not like 10.0.2.100/24"},
		{[]string{"--cidr=10.0.2.100/26", "1"}, "prefix length needs to be 1-25"},
		{[]string{"--cidr=10.0.2.0/28", "1"}, "prefix length needs to be 1-25"},
		{[]string{}, "PID|PATH"},
		{[]string{"abc", "tap0"}, "not a process ID"},
		{[]string{"--netns-type=path", "/nonexistent/netns", "tap0"}, "/nonexistent/netns"},
		{[]string{"999999", "tap0"}, "pid 999999"},
	} {
		exitsOne(t, append([]string{"slirp4netns"}, c.args...), c.want, false)
	}
	// -v and --version print what slirp4netns's users parse.
	for _, flag := range []string{"-v", "--version"} {
		b, err := exec.Command(tapstackBin, "slirp4netns", flag).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(b), "slirp4netns version 1.2.0\n") || !strings.Contains(string(b), "\nSLIRP_CONFIG_VERSION_MAX: 4\n") ||
			!strings.Contains(string(b), "\nlibslirp: 4.7.0\n") {
			t.Errorf("slirp4netns %s: %v\n%s", flag, err, b)
		}
	}
	b, err := exec.Command(tapstackBin, "slirp4netns", "--help").CombinedOutput()
	for _, opt := range []string{"--configure", "--exit-fd", "--ready-fd", "--mtu", "--cidr", "--disable-host-loopback", "--netns-type",
		"--userns-path", "--api-socket", "--enable-ipv6", "--disable-dns", "--outbound-addr", "--outbound-addr6", "--macaddress",
		"--enable-sandbox", "--enable-seccomp", "--target-type", "--help", "--version"} {
		if err != nil || !strings.Contains(string(b), opt) {
			t.Errorf("--help does not list %s (%v)", opt, err)
		}
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// ordinaryUser adds a user named prefix+PID with subordinate ids
// (useradd gives them) and a folder every user can write (t.TempDir's
// parent is private), both removed when the test ends.
func ordinaryUser(t *testing.T, prefix string) (user, dir string) {
	t.Helper()
	user = fmt.Sprintf("%s%d", prefix, os.Getpid()%100000)
	if out, err := exec.Command("useradd", "-M", "-s", "/bin/sh", user).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", user).Run() })
	dir, err := os.MkdirTemp("", "tapstack-"+prefix+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o1777)
	return user, dir
}

// rootlessTarget starts, as an ordinary user (uid 65534), a process in a
// user + network namespace of its own in o, as rootless podman and
// rootlesskit have one; it returns the command prefix that drops to that
// user and the process's PID.
func rootlessTarget(t *testing.T, o *outer) (drop []string, pid int) {
	t.Helper()
	drop = []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "env", "HOME=/", "XDG_RUNTIME_DIR="}
	target := exec.Command("ip", append(append([]string{"netns", "exec", o.name}, drop...), "unshare", "--user", "--map-root-user", "--net", "sleep", "300")...)
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Process.Kill(); target.Wait() })
	pid = target.Process.Pid
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.HasPrefix(string(cl), "sleep") {
			return drop, pid
		}
		if time.Now().After(deadline) {
			t.Fatal("the target did not start")
		}
	}
}

// TestSlirp4netnsWithoutRoot: as an ordinary user (uid 65534), for a
// process in a user + network namespace of that user, as rootless podman
// and rootlesskit start it: the TAP is opened inside the target's user
// namespace (through nsenter) and the namespace reaches a server outside.
func TestSlirp4netnsWithoutRoot(t *testing.T) {
	cienv.RequireTool(t, "setpriv", "nsenter", "unshare")
	o := newOuter(t)
	tunForEveryone(t)
	o.bg("python3", "-c", pyLiveServer, outerV4, "8000")
	o.waitTCP(outerV4, 8000)
	drop, pid := rootlessTarget(t, o)
	d := startSlirp(t, o, drop, tapstackBin, "slirp4netns", "-c", "-r", "3", fmt.Sprint(pid), "tap0")
	out := d.out
	got, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-n", "python3", "-c", pyTimedConnects, outerV4, "8000", "3", "1", "5").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(got), "ok=3 ") {
		t.Fatalf("from the rootless namespace to a server outside: %v %q; daemon: %s", err, got, out.String())
	}
}

// TestRootlesskitWithTapstackAsSlirp4netns: rootlesskit (Debian's), as
// an ordinary user, with --net=slirp4netns and tapstack as its
// slirp4netns binary and port driver: the command it runs fetches a file
// from a server outside with its SHA-256 intact and serves one through
// the published port.
func TestRootlesskitWithTapstackAsSlirp4netns(t *testing.T) { rootlesskitThroughTapstack(t, false) }

// TestRootlesskitIPv6ThroughRouterAdvertisements: rootlesskit --ipv6
// configures no IPv6 in its child; tapstack's router advertisements
// give it an address (SLAAC) and a route, and the file fetched over
// IPv6 from a server outside arrives with its SHA-256 intact.
func TestRootlesskitIPv6ThroughRouterAdvertisements(t *testing.T) {
	rootlesskitThroughTapstack(t, true)
}

// rootlesskitThroughTapstack runs rootlesskit as an ordinary user with
// tapstack as its slirp4netns binary and port driver; with ipv6 it asks
// for IPv6 and the command fetches over it.
func rootlesskitThroughTapstack(t *testing.T, ipv6 bool) {
	cienv.RequireTool(t, "rootlesskit", "newuidmap", "useradd", "userdel", "setpriv")
	o := newOuter(t)
	tunForEveryone(t)
	user, dir := ordinaryUser(t, "tsrk")
	os.MkdirAll(filepath.Join(dir, "www"), 0o755)
	blob := make([]byte, 1<<20)
	rand.Read(blob)
	sum := sha256.Sum256(blob)
	os.WriteFile(filepath.Join(dir, "blob"), blob, 0o644)
	os.WriteFile(filepath.Join(dir, "www", "index.html"), []byte("served through rootlesskit\n"), 0o644)
	o.bg("python3", "-m", "http.server", "--bind", "::", "--directory", dir, "8000")
	o.waitTCP(outerV4, 8000)
	bin := filepath.Join(dir, "tapstack")
	b, _ := os.ReadFile(tapstackBin)
	os.WriteFile(bin, b, 0o755)
	os.Symlink(bin, filepath.Join(dir, "slirp4netns"))
	server, wait, flags := outerV4, "", []string{}
	if ipv6 {
		// The child waits for its SLAAC address and route.
		server, flags = "["+outerV6+"]", []string{"--ipv6"}
		wait = "for i in $(seq 100); do ip -6 route get " + outerV6 + " >/dev/null 2>&1 && ip -6 addr show scope global -tentative | grep -q inet6 && break; sleep 0.1; done; "
	}
	inner := fmt.Sprintf(`%s(ip addr; ip -6 route) > %s/net.log 2>&1; python3 -c "import hashlib, urllib.request; print(hashlib.sha256(urllib.request.urlopen('http://%s:8000/blob', timeout=20).read()).hexdigest())" > %s/fetched; exec python3 -m http.server --bind 0.0.0.0 --directory %s/www 80`,
		wait, dir, server, dir, dir)
	cmd := exec.Command("ip", "netns", "exec", o.name, "setpriv", "--reuid="+user, "--regid="+user, "--init-groups",
		"env", "HOME="+dir, "XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		"rootlesskit", "--state-dir="+filepath.Join(dir, "state"), "--net=slirp4netns", "--slirp4netns-binary="+filepath.Join(dir, "slirp4netns"),
		"--disable-host-loopback", "--port-driver=slirp4netns", "-p", "127.0.0.1:18080:80/tcp")
	cmd.Args = append(append(cmd.Args, flags...), "sh", "-c", inner)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	var got string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		select {
		case <-done:
			t.Fatalf("rootlesskit exited: %v\n%s", waitErr, out.String())
		default:
		}
		b, _ := exec.Command("ip", "netns", "exec", o.name, "python3", "-c",
			"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:18080/', timeout=3).read().decode(), end='')").CombinedOutput()
		if got = string(b); got == "served through rootlesskit\n" {
			break
		}
	}
	if got != "served through rootlesskit\n" {
		t.Fatalf("through rootlesskit's published port: %q\n%s", got, out.String())
	}
	if f, _ := os.ReadFile(filepath.Join(dir, "fetched")); strings.TrimSpace(string(f)) != hex.EncodeToString(sum[:]) {
		netLog, _ := os.ReadFile(filepath.Join(dir, "net.log"))
		t.Fatalf("the file fetched inside rootlesskit: %q, want %x\nthe child's network:\n%s\n%s", f, sum, netLog, out.String())
	}
}

// pyPeerServer answers each connection with the address it came from.
const pyPeerServer = `
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
while True:
    c, a = s.accept()
    c.sendall(a[0].encode())
    c.close()
`

// pyReadFrom connects and prints what the server says.
// readFrom connects from o to host:port with pyReadFrom until the server
// says want (at most 10 s) and returns what it said last.
func (o *outer) readFrom(host string, port int, want string) string {
	var got string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		b, _ := exec.Command("ip", "netns", "exec", o.name, "python3", "-c", pyReadFrom, host, fmt.Sprint(port)).CombinedOutput()
		if got = strings.TrimSpace(string(b)); got == want {
			break
		}
	}
	return got
}

const pyReadFrom = `
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(c.recv(100).decode())
`

// TestSlirp4netnsSandboxSeccompOutbound: with --enable-sandbox and
// --enable-seccomp the daemon runs with no_new_privs, a seccomp filter
// and only CAP_NET_BIND_SERVICE, and still relays, serves its API and
// forwards, and exits 0; --outbound-addr is the source the outside sees;
// a forward's guest_addr may be another address of the namespace.
func TestSlirp4netnsSandboxSeccompOutbound(t *testing.T) {
	o := newOuter(t)
	const outbound = "198.51.100.77"
	if out, err := exec.Command("ip", "-n", o.name, "addr", "add", outbound+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v %s", err, out)
	}
	o.bg("python3", "-c", pyPeerServer, outerV4, "8002")
	o.waitTCP(outerV4, 8002)
	pid := slirpTarget(t, o)
	api := filepath.Join(o.dir, "api.sock")
	d := startSlirp(t, o, nil, tapstackBin, "slirp4netns", "-c", "--enable-sandbox", "--enable-seccomp", "--outbound-addr="+outbound,
		"--api-socket", api, "-r", "3", "-e", "4", fmt.Sprint(pid), "tap0")
	for _, want := range []string{"sandbox: no_new_privs set", "sandbox: file system (Landlock", "seccomp: killed on execve"} {
		if !d.said(want, 5*time.Second) {
			t.Errorf("the daemon did not say %q:\n%s", want, d.out.String())
		}
	}
	status := string(must(os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))))
	for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2", "CapEff:\t0000000000000400", "CapPrm:\t0000000000000400", "CapBnd:\t0000000000000400"} {
		if !strings.Contains(status, want) {
			t.Errorf("the daemon's /proc status lacks %q:\n%s", want, status)
		}
	}
	inTarget := func(args ...string) (string, error) {
		b, err := exec.Command("nsenter", append([]string{"-t", fmt.Sprint(pid), "-n"}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(b)), err
	}
	if got, err := inTarget("python3", "-c", pyReadFrom, outerV4, "8002"); err != nil || got != outbound {
		t.Fatalf("the server outside saw the namespace's connection come from %q (%v), want --outbound-addr %s", got, err, outbound)
	}
	// A second address in the namespace, served through a forward that
	// names it as guest_addr.
	if got, err := inTarget("ip", "addr", "add", "10.0.2.101/24", "dev", "tap0"); err != nil {
		t.Fatalf("ip addr add: %v %s", err, got)
	}
	srv := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-n", "python3", "-c", pyPeerServer, "10.0.2.101", "80")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	if got := slirpAPI(t, api, `{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 18081, "guest_addr": "10.0.2.2", "guest_port": 80}}`); got != `{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}` {
		t.Fatalf("add_hostfwd to the gateway's own address: %q", got)
	}
	if got := slirpAPI(t, api, `{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 18081, "guest_addr": "10.0.2.101", "guest_port": 80}}`); got != `{"return":{"id":1}}` {
		t.Fatalf("add_hostfwd to 10.0.2.101: %q", got)
	}
	if got := o.readFrom("127.0.0.1", 18081, "10.0.2.2"); got != "10.0.2.2" {
		t.Fatalf("through the forward to 10.0.2.101 (the server should see the gateway 10.0.2.2): %q", got)
	}
	if got := slirpAPI(t, api, `{"execute": "list_hostfwd"}`); got != `{"entries":[{"id":1,"proto":"tcp","host_addr":"127.0.0.1","host_port":18081,"guest_addr":"10.0.2.101","guest_port":80}]}` {
		t.Fatalf("list_hostfwd: %q", got)
	}
	// Shutting down under the filter: a clean exit, not SIGSYS.
	d.exitW.Close()
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("after the exit FD closed: %v; %s", err, d.out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after the exit FD closed; %s", d.out.String())
	}
}

// checkSlirpSandbox checks a slirp4netns sandbox from outside, as
// slirp4netns's own suite does: the process (its leader thread, what
// getpcaps reads) holds CAP_NET_BIND_SERVICE and nothing else, and its
// root (/proc/PID/root) shows /etc and /run but not /home, /root or
// /var.
func checkSlirpSandbox(t *testing.T, pid int, out *syncBuffer) {
	t.Helper()
	status := string(must(os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))))
	for _, want := range []string{"CapEff:\t0000000000000400", "CapPrm:\t0000000000000400", "NoNewPrivs:\t1"} {
		if !strings.Contains(status, want) {
			t.Errorf("the sandboxed daemon's status lacks %q:\n%s\ndaemon: %s", want, status, out.String())
		}
	}
	root := fmt.Sprintf("/proc/%d/root/", pid)
	for _, d := range []string{"etc", "run"} {
		if _, err := os.Stat(root + d); err != nil {
			t.Errorf("the sandbox's root lacks /%s: %v", d, err)
		}
	}
	for _, d := range []string{"home", "root", "var", "usr", "tmp"} {
		if _, err := os.Lstat(root + d); err == nil {
			t.Errorf("the sandbox's root shows /%s", d)
		}
	}
}

// TestSlirp4netnsSandboxLikeSlirp4netns: --enable-sandbox as root and as
// an ordinary user for a process in a user + network namespace of its
// own (slirp4netns's suite's case): the daemon keeps its PID, says ready
// only once sandboxed, keeps CAP_NET_BIND_SERVICE alone and sees a root
// holding only /etc and /run; as root a forward to the host's port 80
// added through the API afterwards serves into the namespace.
func TestSlirp4netnsSandboxLikeSlirp4netns(t *testing.T) {
	cienv.RequireTool(t, "setpriv", "nsenter", "unshare")
	t.Run("root", func(t *testing.T) {
		o := newOuter(t)
		pid := slirpTarget(t, o)
		api := filepath.Join(o.dir, "api.sock")
		d := startSlirp(t, o, nil, tapstackBin, "slirp4netns", "-c", "--enable-sandbox", "--api-socket", api, "-r", "3", fmt.Sprint(pid), "tap0")
		checkSlirpSandbox(t, d.cmd.Process.Pid, d.out)
		srv := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-n", "python3", "-c", pyPeerServer, "10.0.2.100", "80")
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
		if got := slirpAPI(t, api, `{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 80, "guest_port": 80}}`); got != `{"return":{"id":1}}` {
			t.Fatalf("add_hostfwd to the host's port 80 in the sandbox: %q; daemon: %s", got, d.out.String())
		}
		if got := o.readFrom("127.0.0.1", 80, "10.0.2.2"); got != "10.0.2.2" {
			t.Fatalf("through the forward on port 80: %q", got)
		}
	})
	t.Run("rootless", func(t *testing.T) {
		o := newOuter(t)
		tunForEveryone(t)
		drop, pid := rootlessTarget(t, o)
		d := startSlirp(t, o, drop, tapstackBin, "slirp4netns", "-c", "--enable-sandbox", "-r", "3", fmt.Sprint(pid), "tap0")
		checkSlirpSandbox(t, d.cmd.Process.Pid, d.out)
		out, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-n", "ip", "-br", "addr", "show", "tap0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "10.0.2.100/24") {
			t.Fatalf("the rootless namespace's tap0: %v %q", err, out)
		}
	})
}

// TestSlirp4netnsAnswersAsSlirp4netns: what slirp4netns's own suite
// checks of a running daemon. With --disable-host-loopback a connection
// to the gateway fails with "Network is unreachable" (and the gateway
// still answers ping); with --disable-dns a connection to 10.0.2.3:53
// gets no answer at all, even with a server at that address on the host;
// --outbound-addr applies to flows to the host's loopback too; an extra
// operand is a warning; and an exit FD that is already closed ends the
// daemon, but only once it runs.
func TestSlirp4netnsAnswersAsSlirp4netns(t *testing.T) {
	o := newOuter(t)
	const outbound = "198.51.100.77"
	for _, a := range []string{outbound + "/32", "10.0.2.3/32"} {
		if out, err := exec.Command("ip", "-n", o.name, "addr", "add", a, "dev", "lo").CombinedOutput(); err != nil {
			t.Fatalf("ip addr add: %v %s", err, out)
		}
	}
	o.bg("python3", "-c", pyPeerServer, "127.0.0.1", "12121")
	o.waitTCP("127.0.0.1", 12121)
	o.bg("python3", "-c", pyPeerServer, "10.0.2.3", "53")
	o.waitTCP("10.0.2.3", 53)
	connect := func(pid int, host, port string) string {
		b, _ := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-n", "python3", "-c", `
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    print("from", c.recv(100).decode())
except OSError as e:
    print(type(e).__name__, e.errno)
`, host, port).CombinedOutput()
		return strings.TrimSpace(string(b))
	}

	pid := slirpTarget(t, o)
	d := startSlirp(t, o, nil, tapstackBin, "slirp4netns", "-c", "--disable-host-loopback", "--disable-dns", "-r", "3", fmt.Sprint(pid), "tap0", "extra-operand")
	if !d.said("WARNING: too many arguments", 5*time.Second) {
		t.Errorf("an extra operand gave no warning: %s", d.out.String())
	}
	if got := connect(pid, "10.0.2.2", "12121"); got != fmt.Sprintf("OSError %d", syscall.ENETUNREACH) {
		t.Errorf("to the gateway with --disable-host-loopback: %q, want ENETUNREACH (Network is unreachable)", got)
	}
	if out, err := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-n", "ping", "-c", "1", "-W", "3", "10.0.2.2").CombinedOutput(); err != nil {
		t.Errorf("ping to the gateway with --disable-host-loopback: %v %s", err, out)
	}
	if got := connect(pid, "10.0.2.3", "53"); got != "TimeoutError None" {
		t.Errorf("to 10.0.2.3:53 with --disable-dns: %q, want no answer (a timeout)", got)
	}

	pid = slirpTarget(t, o)
	startSlirp(t, o, nil, tapstackBin, "slirp4netns", "-c", "--outbound-addr="+outbound, "-r", "3", fmt.Sprint(pid), "tap0")
	if got := connect(pid, "10.0.2.2", "12121"); got != "from "+outbound {
		t.Errorf("to the host's loopback with --outbound-addr: %q, want the host to see %s", got, outbound)
	}

	// The exit FD closed from the start: the daemon comes up, then ends.
	pid = slirpTarget(t, o)
	cmd := exec.Command("ip", "netns", "exec", o.name, tapstackBin, "slirp4netns", "-c", "-e", "5", fmt.Sprint(pid), "tap0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("with a closed exit FD: %v, want exit 0", err)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Error("with a closed exit FD the daemon did not end")
	}
}

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
