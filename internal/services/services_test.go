package services_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/internal/services"
	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack/nshost"
	"github.com/tapstack/tapstack/tests/nstest"
)

func TestEchoAndDiscardAgainstKernelClients(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	srv, err := services.Start(env.Stack, "echo", "discard")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, host := range []string{"10.0.2.2", "fd00::2"} {
		t.Run("tcp/"+host, func(t *testing.T) {
			out := env.Python(60*time.Second, nstest.EchoClientPy, host, "7", fmt.Sprint(1<<20))
			var sent, got string
			var n int
			if _, err := fmt.Sscanf(strings.TrimSpace(out), "sent=%s got=%s n=%d", &sent, &got, &n); err != nil {
				t.Fatalf("client printed %q: %v", out, err)
			}
			if sent != got || n != 1<<20 {
				t.Fatalf("echo of 1 MiB: sent %s, got %s (%d bytes)", sent, got, n)
			}
		})
		t.Run("udp/"+host, func(t *testing.T) {
			out := env.Python(30*time.Second, nstest.UDPEchoClientPy, host, "7", "20")
			if strings.TrimSpace(out) != "ok 20" {
				t.Fatalf("UDP echo: %q, want ok 20", out)
			}
		})
	}
	t.Run("udp/sizes", func(t *testing.T) {
		// The echo answers datagrams of any size whole, a burst of them
		// too, from buffers it takes only while it has datagrams.
		out := env.Python(30*time.Second, udpSizesPy, "10.0.2.2", "7")
		if strings.TrimSpace(out) != "ok 8" {
			t.Fatalf("UDP echo of 1 B to 60 000 B datagrams: %q, want ok 8", out)
		}
	})
	t.Run("discard", func(t *testing.T) {
		out := env.MustRun(10*time.Second, []byte(strings.Repeat("x", 100000)), "nc", "-N", "10.0.2.2", "9")
		if out != "" {
			t.Fatalf("discard answered %q", out)
		}
	})
}

func TestUnknownService(t *testing.T) {
	if _, err := services.Start(nil, "chargen"); err == nil || !strings.Contains(err.Error(), "unknown service") {
		t.Fatalf("Start(chargen) = %v", err)
	}
}

type iperfJSON struct {
	End struct {
		SumSent     struct{ Bytes, BitsPerSecond float64 } `json:"sum_sent"`
		SumReceived struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		Sum struct {
			Packets     float64 `json:"packets"`
			LostPackets float64 `json:"lost_packets"`
		} `json:"sum"`
	} `json:"end"`
	Error string `json:"error"`
}

func TestIPerf3AgainstStockClient(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	srv, err := services.Start(env.Stack, "iperf3")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, args := range [][]string{
		{"-c", "10.0.2.2", "-t", "1"},
		{"-c", "10.0.2.2", "-t", "1", "-R"},
		{"-c", "fd00::2", "-t", "1", "-P", "4"},
		{"-c", "10.0.2.2", "-t", "1", "-u", "-b", "0"},
	} {
		var r iperfJSON
		var out string
		// Like a stock iperf3 server, the service takes one test at a
		// time: a client that comes while the previous test's end is
		// still being handled is told it is busy, and tries again.
		for try := 0; ; try++ {
			res := env.Run(30*time.Second, nil, "iperf3", append(args, "-J")...)
			out, r = res.Stdout, iperfJSON{}
			err := json.Unmarshal([]byte(out), &r)
			if err == nil && strings.Contains(r.Error, "busy") && try < 20 {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if res.Err != nil || err != nil || r.Error != "" {
				t.Fatalf("iperf3 %v: %v, %v %s\nstderr: %s", args, res.Err, err, r.Error, res.Stderr)
			}
			break
		}
		if r.End.SumReceived.Bytes <= 0 && r.End.Sum.Packets <= 0 {
			t.Fatalf("iperf3 %v reported nothing received: %s", args, out)
		}
		t.Logf("iperf3 %v: %.2f Gbit/s received", args, r.End.SumReceived.BitsPerSecond/1e9)
	}
}

// TestIdleServiceConnectionsEnd: an echo connection whose peer neither
// sends nor reads is closed after the idle timeout, and its socket slot
// comes back.
func TestIdleServiceConnectionsEnd(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	srv, err := services.StartWith(env.Stack, services.Options{IdleTimeout: 300 * time.Millisecond}, "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	before := sockets.Table(env.Stack).InUse
	out := env.Python(20*time.Second, `
import socket, time
s = socket.create_connection(("10.0.2.2", 7), timeout=5)
t = time.time()
print("eof" if s.recv(10) == b"" else "data", round(time.time() - t))
`)
	if strings.TrimSpace(out) != "eof 0" {
		t.Fatalf("an idle connection: %q, want the service to close it after 300 ms", out)
	}
	deadline := time.Now().Add(2 * time.Second)
	for sockets.Table(env.Stack).InUse > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := sockets.Table(env.Stack).InUse; n > before {
		t.Fatalf("%d sockets in use after the idle connection ended, %d before", n, before)
	}
}

// udpSizesPy sends datagrams of 1 to 60 000 bytes to argv[1]:argv[2],
// four one at a time and four in a burst, and prints how many came back
// whole.
const udpSizesPy = `
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.connect((sys.argv[1], int(sys.argv[2])))
sizes = [1, 1472, 9000, 60000]
ok = 0
for n in sizes:
    d = os.urandom(n)
    s.send(d)
    if s.recv(65536) == d:
        ok += 1
burst = [os.urandom(n) for n in sizes]
for d in burst:
    s.send(d)
got = set()
for d in burst:
    got.add(s.recv(65536))
ok += sum(1 for d in burst if d in got)
print("ok %d" % ok)
`
