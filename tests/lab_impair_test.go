package tests

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/lab"
	"github.com/tapstack/tapstack/tests/nstest"
)

// labIperf3 runs iperf3 from client to server (which runs iperf3 -s) for
// 3 seconds after a second of ramp-up and returns what arrived, in
// Mbit/s.
func labIperf3(t *testing.T, client, server *lab.Node) float64 {
	t.Helper()
	labBG(t, server, "iperf3", "-s", "-1")
	labWaitPort(t, server, "tcp", "[::]:5201")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := client.Command(ctx, "iperf3", "-c", server.Addr4().String(), "-t", "3", "-O", "1", "-J").Output()
	if err != nil {
		t.Fatalf("iperf3: %v\n%s", err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("iperf3 -J: %v\n%s", err, out)
	}
	return r.End.SumReceived.BitsPerSecond / 1e6
}

// TestLabWireImpairmentMeasured measures a lab wire from outside, as
// TestImpairmentMeasured does the daemon's: loss=10% each way loses
// about 19 % of pings; delay=20ms each way adds about 40 ms to a round
// trip; rate=50mbit caps iperf3 near 50 Mbit/s; "" removes it all. The
// bounds are statistical, with the tolerance written beside each.
func TestLabWireImpairmentMeasured(t *testing.T) {
	cienv.RequireTool(t, "ping", "iperf3")
	n := nstest.NewNetwork(t, lab.Options{Seed: 7})
	a := labNode(t, n, lab.Host, "a")
	b := labNode(t, n, lab.Host, "b")
	w := labConnect(t, n, a, b, lab.LinkOptions{Kind: lab.Wire, NoIPv6: true})
	peer := b.Addr4().String()
	// Neighbours resolved before anything is lost: a lost ARP request
	// would stall the pings behind it for a second.
	if loss, _ := pingStats(t, a.NetNS(), "-c", "3", "-i", "0.05", peer); loss != 0 {
		t.Fatalf("unimpaired wire: %.0f %% of pings lost", loss)
	}

	// 1000 pings: a ping is lost when its request or its reply is,
	// 1 - 0.9² = 19 %; the standard deviation over 1000 is 1.24 %, and
	// ±4 % is more than three of them.
	if err := w.Impair("loss=10%"); err != nil {
		t.Fatal(err)
	}
	there0, back0 := w.Stats()
	loss, _ := pingStats(t, a.NetNS(), "-c", "1000", "-i", "0.002", "-W", "1", peer)
	there, back := w.Stats()
	t.Logf("loss=10%%: %.1f %% of 1000 pings lost; the wire lost %d of %d frames a→b, %d of %d b→a",
		loss, there.Dropped-there0.Dropped, there.Frames-there0.Frames, back.Dropped-back0.Dropped, back.Frames-back0.Frames)
	if loss < 15 || loss > 23 {
		t.Errorf("loss=10%%: %.1f %% of pings lost, want 19 %% ± 4 %%", loss)
	}

	// 20 ms each way: 40 ms a round trip, plus the kernels' and the
	// wire's own (well under 1 ms) and the timers' slack (a millisecond
	// or two idle, up to ten under load).
	if err := w.Impair("delay=20ms"); err != nil {
		t.Fatal(err)
	}
	loss, avg := pingStats(t, a.NetNS(), "-c", "20", "-i", "0.05", peer)
	t.Logf("delay=20ms: ping average %v, loss %.0f %%", avg, loss)
	if loss != 0 || avg < 40*time.Millisecond || avg > 52*time.Millisecond {
		t.Errorf("delay=20ms: ping average %v, loss %.0f %%; want 40 to 52 ms and no loss", avg, loss)
	}

	// 50 Mbit/s: TCP fills the wire but for its headers and ramp-up.
	if err := w.Impair("rate=50mbit"); err != nil {
		t.Fatal(err)
	}
	mbit := labIperf3(t, a, b)
	t.Logf("rate=50mbit: iperf3 %.1f Mbit/s", mbit)
	if mbit < 42 || mbit > 51 {
		t.Errorf("rate=50mbit: iperf3 got %.1f Mbit/s, want 42 to 51", mbit)
	}

	if err := w.Impair(""); err != nil {
		t.Fatal(err)
	}
	if loss, avg := pingStats(t, a.NetNS(), "-c", "200", "-i", "0.002", peer); loss != 0 || avg > 5*time.Millisecond {
		t.Errorf("unimpaired again: loss %.1f %%, average %v", loss, avg)
	}
	if err := w.Impair("loss=200%"); err == nil {
		t.Errorf("Impair(loss=200%%) accepted")
	}
}
