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
