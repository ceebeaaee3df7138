package sockets_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/sockets"
)

// TestPcapOnTheInMemoryCable: a capture added to a running link sees a
// TCP exchange between two stacks whole, both ways, and tcpdump reads it:
// the handshake, the request and the answer with their lengths, the FINs.
func TestPcapOnTheInMemoryCable(t *testing.T) {
	cienv.RequireTool(t, "tcpdump")
	p := newPair(t, 0)
	path := filepath.Join(t.TempDir(), "cable.pcap")
	pc, err := link.CreatePcap(path, link.PcapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	remove := p.la.AddObserver(pc)
	ln := mustSocket(t, p.a, sockets.AF_INET, sockets.SOCK_STREAM)
	if err := ln.Bind(sockets.Addr{Port: 7000}); err != nil {
		t.Fatal(err)
	}
	if err := ln.Listen(1); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		c, _, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		if _, err := c.Recv(100, 0); err != nil {
			served <- err
			return
		}
		_, err = c.SendAll([]byte(strings.Repeat("a", 3000)), 0)
		served <- err
	}()
	c := mustSocket(t, p.b, sockets.AF_INET, sockets.SOCK_STREAM)
	if err := c.Connect(sockets.Addr{Host: "10.0.9.1", Port: 7000}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendAll([]byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	got := 0
	for got < 3000 {
		b, err := c.Recv(65536, 0)
		if err != nil || len(b) == 0 {
			t.Fatalf("after %d bytes: %v", got, err)
		}
		got += len(b)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	// The end of file: the server's FIN has crossed the captured link
	// (it closes after it answered).
	if b, err := c.Recv(100, 0); err != nil || len(b) != 0 {
		t.Fatalf("after the answer: %q, %v; want the end of file", b, err)
	}
	c.Close()
	remove()
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tcpdump", "-nn", "-r", path, "tcp").CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{
		"10.0.9.2.", " > 10.0.9.1.7000: Flags [S]",
		"10.0.9.1.7000 > 10.0.9.2.", ": Flags [S.]",
		"length 5",
		": Flags [F.]",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the capture lacks %q:\n%s", want, text)
		}
	}
	answer := 0
	for _, l := range strings.Split(text, "\n") {
		if i := strings.Index(l, "10.0.9.1.7000 > "); i >= 0 {
			if j := strings.LastIndex(l, "length "); j >= 0 {
				var n int
				if _, err := fmt.Sscan(l[j+len("length "):], &n); err == nil {
					answer += n
				}
			}
		}
	}
	if answer != 3000 {
		t.Errorf("the capture holds %d bytes of the 3000-byte answer:\n%s", answer, text)
	}
	if strings.Contains(text, "truncated") || strings.Contains(text, "bad") {
		t.Errorf("tcpdump complains:\n%s", text)
	}
}
