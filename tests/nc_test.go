package tests

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/stack/nshost"
	"github.com/tapstack/tapstack/tests/nstest"
)

// ncNamespace makes a namespace for tapstack nc to attach to, so that a
// kernel peer can wait in it first.
func ncNamespace(t *testing.T) string {
	t.Helper()
	nstest.Require(t)
	ns := nshost.UniqueName("tsnc-")
	noteNetns(ns)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	exec.Command("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").Run()
	return ns
}

// kernelPeer runs a python3 script in ns in the background until the test
// ends; it returns a function that waits for its output.
func kernelPeer(t *testing.T, ns, script string, args ...string) func() string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, "python3", "-c", script}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The script prints "ready" once it listens; the rest of its output
	// is what wait returns.
	ready := make(chan bool, 1)
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		said := false
		for sc.Scan() {
			if !said && sc.Text() == "ready" {
				said = true
				ready <- true
				continue
			}
			out.WriteString(sc.Text() + "\n")
		}
		if !said {
			ready <- false
		}
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("kernel peer exited before listening: %s", stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("kernel peer not listening after 20 s")
	}
	return func() string {
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("kernel peer did not finish")
		}
		return out.String() + stderr.String()
	}
}

func runNC(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tapstackBin, append([]string{"nc"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

const pyTCPServer = `
import socket, sys
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", int(sys.argv[2])))
s.listen(1)
print("ready", flush=True)
s.settimeout(20)
c, a = s.accept()
data = b""
while True:
    b = c.recv(4096)
    if not b:
        break
    data += b
c.sendall(b"got:" + data)
c.close()
print("peer", a[0])
`

const pyUDPEcho = `
import socket, sys
fam = socket.AF_INET6 if len(sys.argv) > 2 else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
s.settimeout(20)
d, a = s.recvfrom(2000)
s.sendto(b"echo:" + d, a)
print("peer", a[0])
`

func TestNCConnectsToKernelServers(t *testing.T) {
	for _, c := range []struct{ fam, host string }{{"4", "10.0.2.100"}, {"6", "fd00::100"}} {
		ns := ncNamespace(t)
		wait := kernelPeer(t, ns, pyTCPServer, c.fam, "5555")
		out, errs, err := runNC(t, "hello tapstack", "--netns", ns, "-"+c.fam, c.host, "5555")
		if err != nil || out != "got:hello tapstack" {
			t.Fatalf("nc -%s %s: out %q err %v stderr %q", c.fam, c.host, out, err, errs)
		}
		if peer := wait(); !strings.Contains(peer, "peer "+map[string]string{"4": "10.0.2.2", "6": "fd00::2"}[c.fam]) {
			t.Fatalf("kernel server saw %q", peer)
		}
	}
}

func TestNCUDP(t *testing.T) {
	for _, c := range []struct{ host, peer string }{{"10.0.2.100", "10.0.2.2"}, {"fd00::100", "fd00::2"}} {
		ns := ncNamespace(t)
		args := []string{"5353"}
		if strings.Contains(c.host, ":") {
			args = append(args, "6")
		}
		wait := kernelPeer(t, ns, pyUDPEcho, args...)
		out, errs, err := runNC(t, "ping", "--netns", ns, "-u", "-w", "1", c.host, "5353")
		if err != nil || out != "echo:ping" {
			t.Fatalf("nc -u %s: out %q err %v stderr %q", c.host, out, err, errs)
		}
		if got := wait(); !strings.Contains(got, "peer "+c.peer) {
			t.Fatalf("kernel UDP server saw %q", got)
		}
	}
}

func TestNCListens(t *testing.T) {
	ns := ncNamespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tapstackBin, "nc", "--netns", ns, "-l", "6000")
	cmd.Stdin = strings.NewReader("from-stack")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var cl []byte
	var err error
	for i := 0; i < 100; i++ {
		cl, err = exec.Command("ip", "netns", "exec", ns, "python3", "-c", `
import socket
s = socket.create_connection(("10.0.2.2", 6000), timeout=1)
s.sendall(b"from-kernel")
s.shutdown(socket.SHUT_WR)
d = b""
while True:
    b = s.recv(100)
    if not b:
        break
    d += b
print(d.decode())
`).CombinedOutput()
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("kernel client never connected: %v %s; nc stderr %s", err, cl, errb.String())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nc -l: %v, stderr %q", err, errb.String())
	}
	if out.String() != "from-kernel" || strings.TrimSpace(string(cl)) != "from-stack" {
		t.Fatalf("nc -l printed %q, the kernel client got %q", out.String(), cl)
	}
}

func TestNCErrors(t *testing.T) {
	ns := ncNamespace(t)
	_, errs, err := runNC(t, "", "--netns", ns, "10.0.2.100", "1")
	if err == nil || !strings.Contains(errs, "ECONNREFUSED") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("refused: err %v, stderr %q; want one line naming ECONNREFUSED", err, errs)
	}
	_, errs, err = runNC(t, "", "--netns", ns, "example.com", "80")
	if err == nil || !strings.Contains(errs, "EAI_NONAME") || !strings.Contains(errs, "--dns") {
		t.Fatalf("host name without --dns: err %v, stderr %q", err, errs)
	}
	for _, args := range [][]string{{}, {"10.0.2.100"}, {"10.0.2.100", "70000"}, {"-4", "-6", "h", "1"}} {
		cmd := exec.Command(tapstackBin, append([]string{"nc"}, args...)...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
			t.Errorf("nc %v: %v, stderr %q; want exit 2 and one line", args, err, errb.String())
		}
	}
}
