package tests

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/relay"
)

// pingStats runs ping in ns and returns its loss in percent and its
// average round trip.
func pingStats(t *testing.T, ns string, args ...string) (loss float64, avg time.Duration) {
	t.Helper()
	out, _ := inNS(ns, 120*time.Second, nil, "ping", append([]string{"-q"}, args...)...)
	m := regexp.MustCompile(`([0-9.]+)% packet loss`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping %v: %s", args, out)
	}
	loss, _ = strconv.ParseFloat(m[1], 64)
	if r := regexp.MustCompile(`= [0-9.]+/([0-9.]+)/`).FindStringSubmatch(out); r != nil {
		ms, _ := strconv.ParseFloat(r[1], 64)
		avg = time.Duration(ms * float64(time.Millisecond))
	}
	return loss, avg
}

// TestImpairmentMeasured: --impair loss=5% loses about 5 % of frames
// each way, so about 10 % of pings; delay=20ms, set at run time, adds
// about 40 ms to a round trip; rate=100mbit caps iperf3 near 100
// Mbit/s; off removes it. Each is measured, with its tolerance below.
func TestImpairmentMeasured(t *testing.T) {
	cienv.RequireTool(t, "iperf3")
	o := newOuter(t)
	ns := ncNamespace(t)
	d := o.startDaemon(ns, "--serve", "iperf3", "--impair", "loss=5%", "--impair-seed", "7")
	if out := tapstackCtl(t, d.ctl, "impair"); !strings.HasPrefix(out, "loss=5% (seed 7)") {
		t.Fatalf("tapstack impair: %q", out)
	}
	// 2000 pings: a ping is lost when its request or its reply is,
	// 1 - 0.95² = 9.75 %; the standard deviation of the loss over 2000
	// is 0.66 %, and ±3 % is more than four of them.
	loss, _ := pingStats(t, ns, "-c", "2000", "-i", "0.002", "-W", "1", "10.0.2.2")
	t.Logf("loss=5%%: %.2f %% of 2000 pings lost", loss)
	if loss < 6.75 || loss > 12.75 {
		t.Errorf("loss=5%%: %.2f %% of pings lost, want 9.75 %% ± 3 %%", loss)
	}
	show := tapstackCtl(t, d.ctl, "impair")
	if !strings.Contains(show, "in (to the stack): ") || strings.Contains(show, " 0 lost") {
		t.Errorf("tapstack impair after the pings: %q, want frames lost each way", show)
	}

	// 20 ms each way: a round trip of 40 ms plus the stack's and the
	// kernel's own (well under 1 ms here) and the timers' slack (a
	// millisecond or two idle; up to ten when the other tests load the
	// two CPUs).
	tapstackCtl(t, d.ctl, "impair", "delay=20ms")
	loss, avg := pingStats(t, ns, "-c", "20", "-i", "0.05", "10.0.2.2")
	t.Logf("delay=20ms: ping average %v, loss %.0f %%", avg, loss)
	if loss != 0 || avg < 40*time.Millisecond || avg > 52*time.Millisecond {
		t.Errorf("delay=20ms: ping average %v, loss %.0f %%; want 40 to 52 ms and no loss", avg, loss)
	}

	// 100 Mbit/s: TCP fills the wire but for its headers and its ramp-up.
	tapstackCtl(t, d.ctl, "impair", "rate=100mbit")
	out, err := inNS(ns, 60*time.Second, nil, "iperf3", "-c", "10.0.2.2", "-t", "4", "-O", "1", "-J")
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
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("iperf3 -J: %v\n%s", err, out)
	}
	mbit := r.End.SumReceived.BitsPerSecond / 1e6
	t.Logf("rate=100mbit: iperf3 %.1f Mbit/s", mbit)
	if mbit < 85 || mbit > 101 {
		t.Errorf("rate=100mbit: iperf3 got %.1f Mbit/s, want 85 to 101", mbit)
	}

	if out := tapstackCtl(t, d.ctl, "impair", "off"); !strings.HasPrefix(out, "off") {
		t.Fatalf("impair off: %q", out)
	}
	if loss, avg := pingStats(t, ns, "-c", "200", "-i", "0.002", "10.0.2.2"); loss != 0 || avg > 5*time.Millisecond {
		t.Errorf("after off: loss %.1f %%, average %v", loss, avg)
	}
	if out, err := exec.Command(tapstackBin, "impair", "--control", d.ctl, "loss=200%").CombinedOutput(); err == nil {
		t.Errorf("impair loss=200%% accepted: %s", out)
	}
}

// TestImpairingTheInboundTakesTheTAPFromTheEngine: the flow engine's
// loop reads the TAP itself while it relays flows, and gives it back to
// the link's goroutines once none has lived for 2 s; an inbound
// impairment keeps the reads with the goroutines (through the
// impairment), and relayed downloads deliver every byte before, during
// and after it.
func TestImpairingTheInboundTakesTheTAPFromTheEngine(t *testing.T) {
	if relay.DefaultEngine() != relay.EngineFlow {
		cienv.Skip(t, "tests: skipped: the flow engine needs SO_PEEK_OFF on TCP (Linux 6.9+)")
	}
	o := newOuter(t)
	body := make([]byte, 4<<20)
	rand.Read(body)
	sum := sha256.Sum256(body)
	want := hex.EncodeToString(sum[:])
	o.httpServer(8000, string(body))
	ns := ncNamespace(t)
	d := o.startDaemon(ns, "--relay-engine", "flow")
	download := func(when string) {
		t.Helper()
		out, err := inNS(ns, 60*time.Second, nil, "sh", "-c", "curl -sS --max-time 30 http://"+outerV4+":8000/ | sha256sum")
		if err != nil || !strings.HasPrefix(out, want) {
			t.Fatalf("download %s: %v, sha256 %q, want %s", when, err, out, want)
		}
	}
	reader := func(when, want string) {
		t.Helper()
		if st := tapstackCtl(t, d.ctl, "status"); !strings.Contains(st, "read by the "+want) {
			t.Fatalf("status %s: want the TAP read by the %s:\n%s", when, want, st)
		}
	}
	engaged := func(when string, want uint64) {
		t.Helper()
		if n := d.stats()["engine_engaged"]; n != want {
			t.Fatalf("engine_engaged %d %s, want %d", n, when, want)
		}
	}
	// The engine gives the TAP back 2 s after the last flow ended.
	disengaged := func(when string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for d.stats()["engine_engaged"] != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the engine still engaged 10 s %s", when)
			}
			time.Sleep(100 * time.Millisecond)
		}
		reader(when, "link's goroutines")
	}
	reader("at the start, with no relayed flow", "link's goroutines")
	engaged("at the start", 0)
	download("with the engine reading the TAP")
	reader("right after a relayed download", "flow engine's loop")
	engaged("right after a relayed download", 1)
	disengaged("after the download")

	tapstackCtl(t, d.ctl, "impair", "in:delay=10ms")
	reader("with the inbound impaired", "link's goroutines")
	if loss, avg := pingStats(t, ns, "-c", "10", "-i", "0.05", "10.0.2.2"); loss != 0 || avg < 10*time.Millisecond {
		t.Errorf("in:delay=10ms: ping average %v, loss %.0f %%; want at least 10 ms, no loss", avg, loss)
	}
	download("with the inbound impaired")
	engaged("right after a download with the inbound impaired", 1)
	reader("right after a download with the inbound impaired", "link's goroutines")

	tapstackCtl(t, d.ctl, "impair", "off")
	disengaged("after the impaired download")
	download("after the impairment")
	reader("right after a download after the impairment", "flow engine's loop")
	if loss, avg := pingStats(t, ns, "-c", "20", "-i", "0.01", "10.0.2.2"); loss != 0 || avg > 5*time.Millisecond {
		t.Errorf("after off: ping average %v, loss %.0f %%", avg, loss)
	}
}
