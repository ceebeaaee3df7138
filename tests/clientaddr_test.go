package tests

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/stack/nshost"
)

// clientNS makes a third namespace joined to o by a veth: the client at
// 10.89.0.2 and fd89::2, o's side at 10.89.0.1 and fd89::1, the client's
// default routes through o. Its connections to o's addresses reach port
// forwards with an address that is not o's loopback.
func clientNS(t *testing.T, o *outer) string {
	t.Helper()
	ns := nshost.UniqueName("tscl-")
	veth := nshost.UniqueName("tv")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	run("netns", "add", ns)
	noteNetns(ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("-n", o.name, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	run("-n", o.name, "addr", "add", "10.89.0.1/24", "dev", veth)
	run("-n", o.name, "addr", "add", "fd89::1/64", "dev", veth, "nodad")
	run("-n", o.name, "link", "set", veth, "up")
	run("-n", ns, "link", "set", "lo", "up")
	run("-n", ns, "addr", "add", "10.89.0.2/24", "dev", "eth0")
	run("-n", ns, "addr", "add", "fd89::2/64", "dev", "eth0", "nodad")
	run("-n", ns, "link", "set", "eth0", "up")
	run("-n", ns, "route", "add", "default", "via", "10.89.0.1")
	run("-n", ns, "-6", "route", "add", "default", "via", "fd89::1")
	return ns
}

// askFrom connects from namespace ns to host:port and returns what the
// server in the tapstack namespace says the peer's address is.
func askFrom(t *testing.T, ns, host string, port int) string {
	t.Helper()
	var got string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out, _ := exec.Command("ip", "netns", "exec", ns, "python3", "-c", pyReadFrom, host, fmt.Sprint(port)).CombinedOutput()
		if got = strings.TrimSpace(string(out)); got != "" && !strings.Contains(got, "Error") && !strings.Contains(got, "Traceback") {
			return got
		}
	}
	t.Fatalf("no answer from [%s]:%d in namespace %s: %q", host, port, ns, got)
	return ""
}

// pyDualPeerServer tells each client its address (IPv4 ones unmapped),
// on both families; with a third argument N it ends after N clients.
const pyDualPeerServer = `
import socket, sys, itertools
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
for i in (range(int(sys.argv[3])) if len(sys.argv) > 3 else itertools.count()):
    c, a = s.accept()
    c.sendall(a[0].removeprefix("::ffff:").encode())
    c.close()
`

// TestForwardsKeepTheClientAddressInEveryMode: a client in a third
// namespace (10.89.0.2, fd89::2) reaches a server in the tapstack
// namespace through a port forward of tapstack up, of tapstack run, and
// of the slirp4netns API, and the server sees the client's own address,
// as slirp4netns shows it; the reply finds its way back through the
// stack.
func TestForwardsKeepTheClientAddressInEveryMode(t *testing.T) {
	// The forwards of each family are on their own ports: one on [::]
	// would take IPv4 clients too.
	check := func(t *testing.T, client string, port4, port6 int) {
		t.Helper()
		for _, c := range []struct {
			host, peer string
			port       int
		}{{"10.89.0.1", "10.89.0.2", port4}, {"fd89::1", "fd89::2", port6}} {
			if c.port == 0 {
				continue
			}
			if got := askFrom(t, client, c.host, c.port); got != c.peer {
				t.Errorf("through the forward on [%s]:%d the server saw %q, want the client's %s", c.host, c.port, got, c.peer)
			}
		}
	}
	t.Run("up", func(t *testing.T) {
		o := newOuter(t)
		client := clientNS(t, o)
		ns := ncNamespace(t)
		o.upIn("--netns", ns, "--serve", "none", "--control", filepath.Join(o.dir, "ctl"),
			"-p", "0.0.0.0:18090:8080", "-p", "[::]:18190:8080")
		o.bg("ip", "netns", "exec", ns, "python3", "-c", pyDualPeerServer, "::", "8080")
		check(t, client, 18090, 18190)
	})
	t.Run("run", func(t *testing.T) {
		o := newOuter(t)
		client := clientNS(t, o)
		done := make(chan string, 1)
		go func() {
			out, errs, code := o.run(60*time.Second, []string{"-p", "0.0.0.0:18091:8080", "-p", "[::]:18191:8080"},
				"python3", "-c", pyDualPeerServer, "::", "8080", "2")
			done <- fmt.Sprintf("exit %d %s %s", code, out, errs)
		}()
		check(t, client, 18091, 18191)
		select {
		case r := <-done:
			if !strings.HasPrefix(r, "exit 0") {
				t.Errorf("tapstack run: %s", r)
			}
		case <-time.After(30 * time.Second):
			t.Error("tapstack run did not end after its server served two clients")
		}
	})
	t.Run("slirp4netns-api", func(t *testing.T) {
		o := newOuter(t)
		client := clientNS(t, o)
		pid := slirpTarget(t, o)
		api := filepath.Join(o.dir, "api.sock")
		startSlirp(t, o, nil, tapstackBin, "slirp4netns", "-c", "-6", "--api-socket", api, "-r", "3", fmt.Sprint(pid), "tap0")
		srv := exec.Command("nsenter", "-t", fmt.Sprint(pid), "-n", "python3", "-c", pyDualPeerServer, "::", "8080")
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
		// slirp4netns's API forwards IPv4 only.
		if got := slirpAPI(t, api, `{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0", "host_port": 18092, "guest_port": 8080}}`); got != `{"return":{"id":1}}` {
			t.Fatalf("add_hostfwd: %q", got)
		}
		check(t, client, 18092, 0)
	})
}
