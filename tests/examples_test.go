package tests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/sockets/examples"
	"github.com/tapstack/tapstack/stack/nshost"
	"github.com/tapstack/tapstack/tests/nstest"
)

// The seed's fragments (package examples) against kernel peers.

func TestSeedClientGETFromKernelHTTPServer(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("seed page"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := env.Command(ctx, "python3", "-m", "http.server", "--bind", "0.0.0.0", "--directory", dir, "8001")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	var reply string
	var err error
	for i := 0; i < 50; i++ {
		reply, err = examples.HTTPGet(env.Stack, sockets.Addr{Host: "10.0.2.100", Port: 8001})
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || !strings.HasPrefix(reply, "HTTP/1.0 200") || !strings.HasSuffix(reply, "seed page") {
		t.Fatalf("GET / HTTP/1.0: %q, %v", reply, err)
	}
	if n := len(sockets.Table(env.Stack).Sockets); n != 0 {
		t.Fatalf("%d sockets left open: the with pattern leaked", n)
	}
}

func TestSeedServerAcceptsKernelClient(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	ready := make(chan struct{})
	type result struct {
		req  string
		peer sockets.Addr
		err  error
	}
	done := make(chan result, 1)
	go func() {
		req, peer, err := examples.ServeOnce(env.Stack, 8002, "HTTP/1.0 200 OK\r\n\r\nfrom the stack", func() { close(ready) })
		done <- result{req, peer, err}
	}()
	<-ready
	out := env.MustRun(20*time.Second, nil, "curl", "-sS", "--http1.0", "--max-time", "10", "http://10.0.2.2:8002/")
	r := <-done
	if r.err != nil || !strings.HasPrefix(r.req, "GET / HTTP/1.0") || r.peer.Host != "10.0.2.100" || out != "from the stack" {
		t.Fatalf("server: %q from %v (%v); curl got %q", r.req, r.peer, r.err, out)
	}
}

func TestSeedUDPBothWaysAndBroadcast(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	// recvfrom on the stack, a kernel sender.
	ready := make(chan struct{})
	type result struct {
		data []byte
		from sockets.Addr
		err  error
	}
	done := make(chan result, 1)
	go func() {
		d, f, err := examples.ReceiveDatagram(env.Stack, 9998, func() { close(ready) })
		done <- result{d, f, err}
	}()
	<-ready
	env.MustRun(10*time.Second, nil, "python3", "-c", pySendUDP, "10.0.2.2", "9998", "kernel-datagram")
	r := <-done
	if r.err != nil || string(r.data) != "kernel-datagram" || r.from.Host != "10.0.2.100" {
		t.Fatalf("recvfrom: %q from %v, %v", r.data, r.from, r.err)
	}
	// sendto from the stack, a kernel receiver.
	lines := bgPy(t, env, pyRecvUDP, "9997")
	if err := examples.SendDatagram(env.Stack, sockets.Addr{Host: "10.0.2.100", Port: 9997}, []byte("stack-datagram")); err != nil {
		t.Fatal(err)
	}
	if got := next(t, lines); got != "stack-datagram 10.0.2.2" {
		t.Fatalf("kernel got %q", got)
	}
	// The broadcast special host.
	lines = bgPy(t, env, pyRecvUDP, "9999")
	if err := examples.Broadcast(env.Stack, 9999, []byte("to-everyone")); err != nil {
		t.Fatal(err)
	}
	if got := next(t, lines); got != "to-everyone 10.0.2.2" {
		t.Fatalf("kernel got %q from the broadcast", got)
	}
}
