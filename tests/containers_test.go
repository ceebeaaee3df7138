package tests

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/stack/netns"
)

// busyboxRootfs makes a root filesystem of Debian's busybox-static for
// podman run --rootfs: no image, no registry.
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		cienv.Skip(t, "skipped: needs busybox-static")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	for _, d := range []string{"bin", "etc", "tmp", "www", "proc", "sys", "dev"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"sh", "wget", "httpd", "sha256sum", "cat", "nslookup", "sleep"} {
		os.Symlink("busybox", filepath.Join(dir, "bin", c))
	}
	os.WriteFile(filepath.Join(dir, "www", "index.html"), []byte("served from the container\n"), 0o644)
	return dir
}

// podmanIn runs podman in the outer namespace (nsenter, not ip netns
// exec: that remounts /sys and hides the cgroups from runc), in a mount
// namespace of its own whose /etc/resolv.conf names the outer dnsmasq,
// with the flags this machine needs (runc, cgroupfs, explicit limits).
func (o *outer) podmanIn(timeout time.Duration, netCmd string, args ...string) (string, error) {
	o.t.Helper()
	return o.podmanAs(timeout, netCmd, nil, args...)
}

// podmanAs is podmanIn with podman started through asUser (a setpriv
// command line), for rootless podman.
func (o *outer) podmanAs(timeout time.Duration, netCmd string, asUser []string, args ...string) (string, error) {
	o.t.Helper()
	resolv := filepath.Join(o.dir, "podman-resolv.conf")
	os.WriteFile(resolv, []byte("nameserver "+outerV4+"\n"), 0o644)
	podman := append(append(append([]string{}, asUser...), "podman", "--runtime", "runc", "--cgroup-manager=cgroupfs", "--network-cmd-path="+netCmd), args...)
	script := fmt.Sprintf("mount --bind %s /etc/resolv.conf && exec \"$@\"", resolv)
	cmd := exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + o.name, "unshare", "--mount", "--propagation", "private",
		"sh", "-c", script, "sh"}, podman...)...)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		return string(out), fmt.Errorf("podman %v: timed out after %v", args, timeout)
	}
	return string(out), err
}

// TestPodmanWithTapstackAsSlirp4netns: podman (Debian's) runs a container
// with --network slirp4netns and tapstack as its network command: the
// container resolves a name through 10.0.2.3, fetches a file from a
// server outside with its SHA-256 intact, and serves on a published
// port, with podman's slirp4netns port handler (the API socket) and with
// its own rootlessport.
func TestPodmanWithTapstackAsSlirp4netns(t *testing.T) {
	cienv.RequireTool(t, "podman", "runc", "nsenter", "unshare")
	o := newOuter(t)
	forgetPodmanNetns(t)
	rootfs := busyboxRootfs(t)
	sum := o.serveBlob()
	netCmd := filepath.Join(o.dir, "slirp4netns")
	if err := os.Symlink(tapstackBin, netCmd); err != nil {
		t.Fatal(err)
	}
	limits := []string{"--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"}
	out, err := o.podmanIn(120*time.Second, netCmd, append(append([]string{"run", "--rm", "--network", "slirp4netns"}, limits...),
		"--rootfs", rootfs, "/bin/sh", "-c", "nslookup files.test 10.0.2.3 >/dev/null && wget -q -O /tmp/blob http://files.test:8000/blob && sha256sum /tmp/blob")...)
	if err != nil || !strings.Contains(out, sum) {
		t.Fatalf("fetch through tapstack in a podman container: %v\n%s", err, out)
	}
	for i, handler := range []string{"slirp4netns:port_handler=slirp4netns", "slirp4netns"} {
		name := fmt.Sprintf("tstpod%d-%d", os.Getpid(), i)
		port := 18080 + i
		t.Cleanup(func() { o.podmanIn(60*time.Second, netCmd, "rm", "-f", name) })
		out, err := o.podmanIn(120*time.Second, netCmd, append(append([]string{"run", "-d", "--name", name, "--network", handler,
			"-p", fmt.Sprintf("127.0.0.1:%d:80", port)}, limits...), "--rootfs", rootfs, "/bin/httpd", "-f", "-p", "80", "-h", "/www")...)
		if err != nil {
			t.Fatalf("podman run -d (%s): %v\n%s", handler, err, out)
		}
		var got string
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			b, _ := exec.Command("ip", "netns", "exec", o.name, "python3", "-c",
				fmt.Sprintf("import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:%d/', timeout=3).read().decode(), end='')", port)).CombinedOutput()
			if got = string(b); got == "served from the container\n" {
				break
			}
		}
		if got != "served from the container\n" {
			t.Fatalf("the published port with %s: %q", handler, got)
		}
		// podman asks for the sandbox and the filter (it finds them in
		// --help), and the daemon serving the container runs under both.
		checkSandboxedSlirp(t)
		o.podmanIn(60*time.Second, netCmd, "rm", "-f", name)
	}
}

// forgetPodmanNetns removes, when the test ends, the netns-* entries of
// /run/netns that appeared during it: podman makes one per container and
// binds it in the private mount namespace podmanIn runs it in, so its
// cleanup, from another mount namespace, leaves the empty file behind.
func forgetPodmanNetns(t *testing.T) {
	t.Helper()
	before := map[string]bool{}
	ents, _ := os.ReadDir(netns.Dir)
	for _, e := range ents {
		before[e.Name()] = true
	}
	t.Cleanup(func() {
		ents, _ := os.ReadDir(netns.Dir)
		for _, e := range ents {
			if n := e.Name(); strings.HasPrefix(n, "netns-") && !before[n] {
				p := filepath.Join(netns.Dir, n)
				_ = unix.Unmount(p, unix.MNT_DETACH)
				_ = os.Remove(p)
			}
		}
	})
}

// checkSandboxedSlirp finds the running tapstack slirp4netns processes and
// checks that they were asked for --enable-sandbox and --enable-seccomp
// and run with no_new_privs, the seccomp filter and no capability but
// CAP_NET_BIND_SERVICE.
func checkSandboxedSlirp(t *testing.T) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	found := 0
	for _, p := range procs {
		if exe, _ := os.Readlink(p + "/exe"); exe != tapstackBin {
			continue
		}
		cmdline := strings.ReplaceAll(string(must(os.ReadFile(p+"/cmdline"))), "\x00", " ")
		if !strings.Contains(cmdline, "slirp4netns") || strings.Contains(cmdline, "__slirp-tap") {
			continue
		}
		found++
		if !strings.Contains(cmdline, "--enable-sandbox") || !strings.Contains(cmdline, "--enable-seccomp") {
			t.Errorf("podman started %q without the sandbox", cmdline)
		}
		status := string(must(os.ReadFile(p + "/status")))
		for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2", "CapEff:\t0000000000000400"} {
			if !strings.Contains(status, want) {
				t.Errorf("%s (%s) lacks %q in its status", p, cmdline, want)
			}
		}
	}
	if found == 0 {
		t.Error("no tapstack slirp4netns process is running beside the container")
	}
}

// TestRootlessPodmanWithTapstackAsSlirp4netns: an ordinary user's podman
// (rootless: its own user namespace, where it starts the network command
// as that namespace's root) runs a container with tapstack as
// slirp4netns: the container resolves a name through 10.0.2.3, fetches a
// file from outside with its SHA-256 intact, and serves on a published
// port (podman's rootlessport). On this machine's hybrid cgroups rootless
// podman needs runc (crun refuses hybrid mode) and a /dev/net/tun the
// user may open.
func TestRootlessPodmanWithTapstackAsSlirp4netns(t *testing.T) {
	cienv.RequireTool(t, "podman", "runc", "nsenter", "unshare", "newuidmap", "useradd", "userdel", "setpriv")
	o := newOuter(t)
	forgetPodmanNetns(t)
	tunForEveryone(t)
	user := fmt.Sprintf("tspm%d", os.Getpid()%100000)
	if out, err := exec.Command("useradd", "-M", "-s", "/bin/sh", user).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v %s", err, out)
	}
	uid := must(strconv.Atoi(strings.TrimSpace(string(must(exec.Command("id", "-u", user).Output())))))
	t.Cleanup(func() {
		endProcessesOf(uid) // podman's pause process and conmon stay behind
		exec.Command("userdel", user).Run()
	})
	home, err := os.MkdirTemp("", "tapstack-pm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	os.Chmod(home, 0o755)
	rootfs := busyboxRootfs(t)
	os.Chmod(filepath.Dir(rootfs), 0o755)
	bin := filepath.Join(home, "tapstack")
	os.WriteFile(bin, must(os.ReadFile(tapstackBin)), 0o755)
	netCmd := filepath.Join(home, "slirp4netns")
	os.Symlink(bin, netCmd)
	if out, err := exec.Command("chown", "-R", user+":", home, rootfs).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	asUser := []string{"setpriv", "--reuid=" + user, "--regid=" + user, "--init-groups",
		"env", "HOME=" + home, "XDG_RUNTIME_DIR=" + filepath.Join(home, "run")}
	os.Mkdir(filepath.Join(home, "run"), 0o700)
	exec.Command("chown", user+":", filepath.Join(home, "run")).Run()

	sum := o.serveBlob()
	out, err := o.podmanAs(120*time.Second, netCmd, asUser, "run", "--rm", "--network", "slirp4netns", "--rootfs", rootfs,
		"/bin/sh", "-c", "nslookup files.test 10.0.2.3 >/dev/null && wget -q -O /tmp/blob http://files.test:8000/blob && sha256sum /tmp/blob")
	if err != nil || !strings.Contains(out, sum) {
		t.Fatalf("fetch through tapstack in a rootless podman container: %v\n%s", err, out)
	}
	name := fmt.Sprintf("tstpodrl%d", os.Getpid())
	t.Cleanup(func() { o.podmanAs(60*time.Second, netCmd, asUser, "rm", "-f", name) })
	out, err = o.podmanAs(120*time.Second, netCmd, asUser, "run", "-d", "--name", name, "--network", "slirp4netns",
		"-p", "127.0.0.1:18090:80", "--rootfs", rootfs, "/bin/httpd", "-f", "-p", "80", "-h", "/www")
	if err != nil {
		t.Fatalf("rootless podman run -d: %v\n%s", err, out)
	}
	var got string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		b, _ := exec.Command("ip", "netns", "exec", o.name, "python3", "-c",
			"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:18090/', timeout=3).read().decode(), end='')").CombinedOutput()
		if got = string(b); got == "served from the container\n" {
			break
		}
	}
	if got != "served from the container\n" {
		t.Fatalf("the published port of a rootless container: %q", got)
	}
	o.podmanAs(60*time.Second, netCmd, asUser, "rm", "-f", name)
}

// endProcessesOf kills the processes running as uid (a user the test
// made), by PID.
func endProcessesOf(uid int) {
	for range 3 {
		procs, _ := filepath.Glob("/proc/[0-9]*")
		n := 0
		for _, p := range procs {
			var st syscall.Stat_t
			if syscall.Stat(p, &st) != nil || int(st.Uid) != uid {
				continue
			}
			if pid, err := strconv.Atoi(filepath.Base(p)); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
				n++
			}
		}
		if n == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serveBlob serves a random 1 MiB file as http://files.test:8000/blob
// (dnsmasq on outerV4 names files.test) and returns its SHA-256 in hex.
func (o *outer) serveBlob() string {
	o.t.Helper()
	o.dnsmasq(outerV4)
	blob := make([]byte, 1<<20)
	rand.Read(blob)
	sum := sha256.Sum256(blob)
	www := filepath.Join(o.dir, "files")
	os.MkdirAll(www, 0o755)
	os.WriteFile(filepath.Join(www, "blob"), blob, 0o644)
	o.bg("python3", "-m", "http.server", "--bind", outerV4, "--directory", www, "8000")
	o.waitTCP(outerV4, 8000)
	return hex.EncodeToString(sum[:])
}

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
