package tests

import (
	"crypto/rand"
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

// rootlesskit2 is rootlesskit 2, which has --net=pasta: .ci/run builds
// it into /opt/rootlesskit2 (Debian's rootlesskit is 1.x);
// $TAPSTACK_ROOTLESSKIT2 names another.
func rootlesskit2(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("TAPSTACK_ROOTLESSKIT2")
	if bin == "" {
		bin = "/opt/rootlesskit2/rootlesskit"
	}
	if _, err := os.Stat(bin); err != nil {
		cienv.Skip(t, "needs rootlesskit 2 (GOBIN=/opt/rootlesskit2 go install github.com/rootless-containers/rootlesskit/v2/cmd/rootlesskit@v2.3.6)")
	}
	return bin
}

// pyServeChild serves, in rootlesskit's child, a file over TCP on port
// argv[1] and a UDP echo on argv[2], after fetching argv[3] (a URL)
// and resolving argv[4] into the file argv[5].
const pyServeChild = `
import hashlib, http.server, os, socket, socketserver, sys, threading, urllib.request
tcp, udp, url, name, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
lines = [hashlib.sha256(urllib.request.urlopen(url, timeout=20).read()).hexdigest()]
lines.append(" ".join(sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET)})))
open(out, "w").write("\n".join(lines) + "\n")
def echo():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", udp))
    while True:
        d, a = s.recvfrom(2000)
        s.sendto(b"echo:" + d, a)
threading.Thread(target=echo, daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"served through pasta\n")
socketserver.TCPServer(("0.0.0.0", tcp), H).serve_forever()
`

// TestRootlesskit2WithTapstackAsPasta: rootlesskit 2.3.6 as an ordinary
// user with --net=pasta and tapstack as its pasta binary. With
// --port-driver=implicit the child fetches a file from a server outside
// (SHA-256 intact), resolves a name through the DNS forward address, and
// a TCP and a UDP port it listens on answer on the host's loopback
// without any -p; with --port-driver=none the same but no port is
// published. Once rootlesskit ends, the pasta daemon ends within seconds.
func TestRootlesskit2WithTapstackAsPasta(t *testing.T) {
	rk := rootlesskit2(t)
	cienv.RequireTool(t, "newuidmap", "useradd", "userdel", "setpriv", "nsenter", "dnsmasq")
	for _, driver := range []string{"implicit", "none"} {
		t.Run(driver, func(t *testing.T) {
			o := newOuter(t)
			tunForEveryone(t)
			o.dnsmasq(outerV4)
			// The daemon's upstream resolver, as ip netns exec shows it.
			etc := filepath.Join("/etc/netns", o.name)
			os.MkdirAll(etc, 0o755)
			t.Cleanup(func() { os.RemoveAll(etc) })
			os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver "+outerV4+"\n"), 0o644)
			user, dir := ordinaryUser(t, "tspa")
			blob := make([]byte, 1<<20)
			rand.Read(blob)
			sum := sha256.Sum256(blob)
			os.WriteFile(filepath.Join(dir, "blob"), blob, 0o644)
			o.bg("python3", "-m", "http.server", "--bind", outerV4, "--directory", dir, "8000")
			o.waitTCP(outerV4, 8000)
			b, _ := os.ReadFile(tapstackBin)
			bin := filepath.Join(dir, "tapstack")
			os.WriteFile(bin, b, 0o755)
			pasta := filepath.Join(dir, "pasta")
			os.Symlink(bin, pasta)
			cmd := exec.Command("ip", "netns", "exec", o.name, "setpriv", "--reuid="+user, "--regid="+user, "--init-groups",
				"env", "HOME="+dir, "XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
				rk, "--state-dir="+filepath.Join(dir, "state"), "--net=pasta", "--pasta-binary="+pastaLogged(t, dir, pasta), "--port-driver="+driver,
				"--disable-host-loopback", "python3", "-c", pyServeChild, "18080", "18081", "http://"+outerV4+":8000/blob", "name.test",
				filepath.Join(dir, "child"))
			var out syncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			stopped := false
			t.Cleanup(func() {
				if !stopped {
					cmd.Process.Signal(os.Interrupt)
					select {
					case <-done:
					case <-time.After(10 * time.Second):
						cmd.Process.Kill()
					}
				}
			})
			var child string
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				select {
				case err := <-done:
					stopped = true
					t.Fatalf("rootlesskit exited: %v\n%s", err, out.String())
				default:
				}
				if c, _ := os.ReadFile(filepath.Join(dir, "child")); strings.Count(string(c), "\n") == 2 {
					child = string(c)
					break
				}
			}
			if want := hex.EncodeToString(sum[:]) + "\n10.0.2.50\n"; child != want {
				t.Fatalf("inside rootlesskit: %q, want the file's SHA-256 and name.test's address %q\n%s", child, want, out.String())
			}
			tcp := o.readHTTP("127.0.0.1", 18080)
			udp := o.udpEcho("127.0.0.1", 18081)
			if driver == "implicit" && (tcp != "served through pasta\n" || udp != "echo:ping") {
				ss, _ := filepath.Glob(filepath.Join(dir, "run", "tapstack", "*.sock"))
				var state string
				for _, s := range ss {
					b, _ := exec.Command(tapstackBin, "ss", "--control", s).CombinedOutput()
					state += string(b)
				}
				log, _ := os.ReadFile(filepath.Join(dir, "pasta.log"))
				t.Errorf("published without -p: TCP %q, UDP %q\n%s\npasta's log:\n%s\n%s", tcp, udp, state, log, out.String())
			}
			if driver == "none" && (tcp != "" || udp != "") {
				t.Errorf("with --port-driver=none a port answered: TCP %q, UDP %q", tcp, udp)
			}
			// rootlesskit ends; its pasta must follow.
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
			stopped = true
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				left := processesOf(pasta, bin)
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the pasta daemon (pids %v) still runs 5 s after its namespace went away", left)
				}
			}
		})
	}
}

// pastaLogged is a pasta wrapper that logs the daemon to dir/pasta.log
// (rootlesskit passes no --log-file of its own).
func pastaLogged(t *testing.T, dir, pasta string) string {
	w := filepath.Join(dir, "pasta-logged")
	if err := os.WriteFile(w, []byte("#!/bin/sh\nexec "+pasta+" --debug --log-file "+filepath.Join(dir, "pasta.log")+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return w
}

// readHTTP gets http://host:port/ from o, trying for a few seconds ("" if
// nothing answers).
func (o *outer) readHTTP(host string, port int) string {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		b, err := exec.Command("ip", "netns", "exec", o.name, "python3", "-c",
			fmt.Sprintf("import urllib.request; print(urllib.request.urlopen('http://%s:%d/', timeout=2).read().decode(), end='')", host, port)).Output()
		if err == nil {
			return string(b)
		}
	}
	return ""
}

// udpEcho sends "ping" to host:port from o and returns the answer ("" if
// none came).
func (o *outer) udpEcho(host string, port int) string {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		b, err := exec.Command("ip", "netns", "exec", o.name, "python3", "-c", fmt.Sprintf(`
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(b"ping", (%q, %d))
print(s.recvfrom(100)[0].decode(), end="")`, host, port)).Output()
		if err == nil {
			return string(b)
		}
	}
	return ""
}

// processesOf lists the processes running one of the executables.
func processesOf(paths ...string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		for _, p := range paths {
			if exe == p {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

// TestPodman5ArgvWithTapstackAsPasta: the argument lists podman 5 gives
// pasta (its libnetwork/pasta, container and rootless-netns forms), with
// tapstack as pasta, as root for a named namespace: the launcher returns
// 0 at once with the namespace configured, its PID file naming the
// daemon; a name resolves through --dns-forward 169.254.1.1;
// --map-guest-addr 169.254.1.2 reaches the host; a published port range
// serves into the namespace; deleting the namespace ends the daemon.
func TestPodman5ArgvWithTapstackAsPasta(t *testing.T) {
	o := newOuter(t)
	o.dnsmasq(outerV4)
	etc := filepath.Join("/etc/netns", o.name)
	os.MkdirAll(etc, 0o755)
	t.Cleanup(func() { os.RemoveAll(etc) })
	os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver "+outerV4+"\n"), 0o644)
	o.bg("python3", "-c", pyPeerServer, "127.0.0.1", "18090") // a service of the host's loopback
	o.waitTCP("127.0.0.1", 18090)
	ns := ncNamespace(t)
	// The container's resolv.conf, which podman writes.
	nsEtc := filepath.Join("/etc/netns", ns)
	os.MkdirAll(nsEtc, 0o755)
	t.Cleanup(func() { os.RemoveAll(nsEtc) })
	os.WriteFile(filepath.Join(nsEtc, "resolv.conf"), []byte("nameserver 169.254.1.1\n"), 0o644)
	pidFile := filepath.Join(o.dir, "pasta.pid")
	argv := []string{"--config-net", "-t", "18080-18081:8080-8081", "--dns-forward", "169.254.1.1", "-u", "none", "-T", "none", "-U", "none",
		"--no-map-gw", "--quiet", "--pid", pidFile, "--netns", "/run/netns/" + ns, "--map-guest-addr", "169.254.1.2"}
	start := time.Now()
	out, err := exec.Command("ip", append([]string{"netns", "exec", o.name, tapstackBin, "pasta"}, argv...)...).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Fatalf("pasta %v: %v, output %q (want exit 0 and no output with --quiet)", argv, err, out)
	}
	t.Logf("the launcher returned after %v", time.Since(start).Round(time.Millisecond))
	b, _ := os.ReadFile(pidFile)
	pid := strings.TrimSpace(string(b))
	if _, err := os.Stat("/proc/" + pid); pid == "" || err != nil {
		t.Fatalf("the PID file says %q: no such daemon", b)
	}
	t.Cleanup(func() { exec.Command("kill", pid).Run() })
	addr, _ := inNS(ns, 5*time.Second, nil, "ip", "-br", "addr", "show", "tap0")
	if !strings.Contains(addr, "10.0.2.100/24") {
		t.Fatalf("the namespace's tap0 when the launcher returned: %q", addr)
	}
	if got, err := inNS(ns, 20*time.Second, nil, "python3", "-c",
		`import socket; print(sorted({a[4][0] for a in socket.getaddrinfo("name.test", 80, socket.AF_INET)}))`); err != nil || strings.TrimSpace(got) != "['10.0.2.50']" {
		t.Errorf("name.test through --dns-forward 169.254.1.1: %v %q", err, got)
	}
	if got, err := inNS(ns, 20*time.Second, nil, "python3", "-c", pyReadFrom, "169.254.1.2", "18090"); err != nil || strings.TrimSpace(got) == "" {
		t.Errorf("the host's service through --map-guest-addr 169.254.1.2: %v %q", err, got)
	}
	srv := exec.Command("ip", "netns", "exec", ns, "python3", "-c", pyPeerServer, "10.0.2.100", "8081")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	if got := o.readFrom("127.0.0.1", 18081, "10.0.2.2"); got != "10.0.2.2" {
		t.Errorf("through -t 18080-18081:8080-8081 on port 18081: %q", got)
	}
	// podman deletes the namespace; pasta follows.
	if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v %s", err, out)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat("/proc/" + pid); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pasta daemon %s still runs 5 s after its namespace was deleted", pid)
		}
	}
}

// TestPastaCommandLine: pasta's options that tapstack does not support
// are refused in getopt's words (podman reads "unrecognized option"),
// bad values with pasta's messages, exit 1; --version and --help exit 0.
func TestPastaCommandLine(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus", "1"}, "unrecognized option '--bogus'"},
		{[]string{"--host-lo-to-ns-lo", "--version"}, "not supported by tapstack"},
		{[]string{"-t", "99999", "1"}, "invalid port specifier 99999"},
		{[]string{"-t", "5-3", "1"}, "invalid port specifier 5-3"},
		{[]string{"-t", "auto", "-t", "22", "1"}, "cannot be specified together"},
		{[]string{"-4", "-6", "1"}, "mutually exclusive"},
		{[]string{"-q", "-q", "1"}, "multiple --quiet options"},
		{[]string{"-T", "~22", "--netns", "/nonexistent"}, "not supported by tapstack"},
		{[]string{"echo", "hi"}, "tapstack run runs a command"},
		{[]string{"-f", "--netns", "/nonexistent"}, "/nonexistent"},
	} {
		exitsOne(t, append([]string{"pasta"}, c.args...), c.want, true)
	}
	for _, flag := range []string{"--version", "--help"} {
		if out, err := exec.Command(tapstackBin, "pasta", flag).CombinedOutput(); err != nil || !strings.Contains(string(out), "pasta") {
			t.Errorf("pasta %s: %v %q", flag, err, out)
		}
	}
}

// TestPastaForwardsFromTheNamespace: -T and -U carry what the namespace
// sends to its loopback's ports on to the host's loopback, as pasta's do:
// a TCP port and a UDP port given explicitly (mapped to other host
// ports), and with -T auto every TCP port the host listens on, within
// seconds of the host starting to listen.
func TestPastaForwardsFromTheNamespace(t *testing.T) {
	o := newOuter(t)
	o.bg("python3", "-c", pyPeerServer, "127.0.0.1", "18090")
	o.waitTCP("127.0.0.1", 18090)
	o.bg("python3", "-c", `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 18091))
while True:
    d, a = s.recvfrom(100)
    s.sendto(b"echo:" + d, a)
`)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"explicit", []string{"-T", "18095:18090", "-U", "18096:18091"}},
		{"auto", []string{"-T", "auto", "-U", "none"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := ncNamespace(t)
			pidFile := filepath.Join(t.TempDir(), "pasta.pid")
			args := append([]string{"pasta", "--config-net", "-t", "none", "-u", "none", "--quiet", "--pid", pidFile, "--netns", "/run/netns/" + ns}, c.args...)
			if out, err := exec.Command("ip", append([]string{"netns", "exec", o.name, tapstackBin}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v %s", args, err, out)
			}
			b, _ := os.ReadFile(pidFile)
			t.Cleanup(func() { exec.Command("kill", strings.TrimSpace(string(b))).Run() })
			port := "18095"
			if c.name == "auto" {
				port = "18090"
			}
			var got string
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				out, _ := inNS(ns, 5*time.Second, nil, "python3", "-c", pyReadFrom, "127.0.0.1", port)
				if got = strings.TrimSpace(out); got == "127.0.0.1" {
					break
				}
			}
			if got != "127.0.0.1" {
				t.Fatalf("from the namespace's 127.0.0.1:%s to the host's: %q", port, got)
			}
			if c.name == "explicit" {
				out, err := inNS(ns, 10*time.Second, nil, "python3", "-c", `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(b"ping", ("127.0.0.1", 18096))
print(s.recvfrom(100)[0].decode())
`)
				if err != nil || strings.TrimSpace(out) != "echo:ping" {
					t.Fatalf("UDP from the namespace's 127.0.0.1:18096 to the host's 18091: %v %q", err, out)
				}
			}
		})
	}
}
