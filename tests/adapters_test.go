package tests

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack/nshost"
	"github.com/tapstack/tapstack/tests/nstest"
)

func TestHTTPServerOnStackServesKernelCurl(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	ln, err := sockets.Listen(env.Stack, "tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s from tapstack", r.RemoteAddr)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	for _, url := range []string{"http://10.0.2.2:8080/", "http://[fd00::2]:8080/"} {
		out := env.MustRun(20*time.Second, nil, "curl", "-sS", "--max-time", "10", url)
		if !strings.HasPrefix(out, "hello ") || !strings.HasSuffix(out, " from tapstack") {
			t.Fatalf("curl %s: %q", url, out)
		}
		want := "10.0.2.100"
		if strings.Contains(url, "[") {
			want = "[fd00::100]"
		}
		if !strings.Contains(out, want) {
			t.Fatalf("curl %s: the server saw %q, want the peer %s", url, out, want)
		}
	}
}

func TestHTTPClientOnStackFetchesFromKernelServer(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	body := strings.Repeat("tapstack!", 100000)
	if err := os.WriteFile(filepath.Join(dir, "file.txt"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := env.Command(ctx, "python3", "-m", "http.server", "--bind", "::", "--directory", dir, "8000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return sockets.Dial(ctx, env.Stack, network, addr)
		},
	}, Timeout: 10 * time.Second}
	for _, url := range []string{"http://10.0.2.100:8000/file.txt", "http://[fd00::100]:8000/file.txt"} {
		var resp *http.Response
		var err error
		for i := 0; i < 50; i++ { // the server may still be starting
			resp, err = client.Get(url)
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(got) != body {
			t.Fatalf("GET %s: status %d, %d bytes, %v", url, resp.StatusCode, len(got), err)
		}
	}
}

func TestLinkLocalWithScope(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	// The kernel side's link-local address, once DAD is done.
	var ll string
	for i := 0; i < 50 && ll == ""; i++ {
		out := env.MustRun(5*time.Second, nil, "ip", "-6", "-o", "addr", "show", "dev", env.TAP, "scope", "link")
		if f := strings.Fields(out); len(f) > 3 && !strings.Contains(out, "tentative") {
			ll = strings.Split(f[3], "/")[0]
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if ll == "" {
		t.Fatal("the namespace side has no usable link-local address")
	}
	lines := bgPy(t, env, `
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.bind(("::", 7400)); s.listen(1); s.settimeout(10)
print("ready")
c, a = s.accept()
print(a[0])
`)
	s, err := sockets.New(env.Stack, sockets.AF_INET6, sockets.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Connect(sockets.Addr{Host: ll, Port: 7400}); err == nil || !strings.Contains(err.Error(), "scope") {
		t.Fatalf("link-local connect without a scope: %v, want EINVAL naming the scope", err)
	}
	if err := s.Connect(sockets.Addr{Host: ll + "%" + env.TAP, Port: 7400}); err != nil {
		t.Fatal(err)
	}
	la, _ := s.GetSockName()
	nic, _ := env.Stack.NICByName(env.TAP)
	if !strings.HasPrefix(la.Host, "fe80::") || la.ScopeID != uint32(nic.ID) {
		t.Fatalf("GetSockName = %+v, want a link-local address with scope %d", la, nic.ID)
	}
	peer, _ := s.GetPeerName()
	if peer.Host != ll || peer.ScopeID != uint32(nic.ID) {
		t.Fatalf("GetPeerName = %+v", peer)
	}
	if got := next(t, lines); !strings.HasPrefix(got, "fe80::") || got != la.Host {
		t.Fatalf("kernel saw the peer %q, want %s", got, la.Host)
	}
}
