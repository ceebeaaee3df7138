package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/stack/netns"
	"github.com/tapstack/tapstack/stack/nshost"
	"github.com/tapstack/tapstack/tests/nstest"
)

// upDaemon is a `tapstack up` subprocess.
type upDaemon struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	ready  string
	done   chan error
}

// startUp runs tapstack up with args and waits for its ready line.
func startUp(t *testing.T, args ...string) *upDaemon {
	t.Helper()
	d := &upDaemon{cmd: exec.Command(tapstackBin, append([]string{"up"}, args...)...), done: make(chan error, 1)}
	d.cmd.Stderr = &d.stderr
	dieWithTest(d.cmd)
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.done:
			case <-time.After(10 * time.Second):
				_ = d.cmd.Process.Kill()
				<-d.done
			}
		}
	})
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, out)
		d.done <- d.cmd.Wait()
	}()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("tapstack up exited before ready: %s", d.stderr.String())
			}
			if strings.HasPrefix(l, "ready") {
				d.ready = l
				go func() {
					for range lines {
					}
				}()
				return d
			}
		case <-timeout:
			t.Fatalf("no ready line in 20s; stderr: %s", d.stderr.String())
		}
	}
}

// stop sends SIGTERM and returns the exit error.
func (d *upDaemon) stop(t *testing.T) error {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.done:
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("tapstack up did not stop within 15s of SIGTERM")
	}
	return nil
}

func inNS(ns string, timeout time.Duration, stdin []byte, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestUpServesAndCleansUp(t *testing.T) {
	nstest.Require(t)
	ns := nshost.UniqueName("tsup-")
	tap := nshost.UniqueName("tu")
	d := startUp(t, "--netns", ns, "--tap", tap)
	if !strings.Contains(d.ready, "netns="+ns) || !strings.Contains(d.ready, "stack=10.0.2.2/24,fd00::2/64") {
		t.Errorf("ready line %q lacks the namespace or the addresses", d.ready)
	}
	for _, args := range [][]string{{"-c", "1", "-W", "2", "10.0.2.2"}, {"-6", "-c", "1", "-W", "2", "fd00::2"}} {
		if out, err := inNS(ns, 10*time.Second, nil, "ping", args...); err != nil {
			t.Fatalf("ping %v: %v\n%s", args, err, out)
		}
	}
	for _, host := range []string{"10.0.2.2", "fd00::2"} {
		out, err := inNS(ns, 60*time.Second, nil, "python3", "-c", nstest.EchoClientPy, host, "7", fmt.Sprint(1<<20))
		if err != nil {
			t.Fatalf("echo via %s: %v\n%s", host, err, out)
		}
		var sent, got string
		var n int
		fmt.Sscanf(strings.TrimSpace(out), "sent=%s got=%s n=%d", &sent, &got, &n)
		if sent == "" || sent != got || n != 1<<20 {
			t.Fatalf("echo of 1 MiB via %s: %q", host, out)
		}
		out, err = inNS(ns, 30*time.Second, nil, "python3", "-c", nstest.UDPEchoClientPy, host, "7", "10")
		if err != nil || strings.TrimSpace(out) != "ok 10" {
			t.Fatalf("UDP echo via %s: %v %q", host, err, out)
		}
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("tapstack up after SIGTERM: %v (want exit 0); stderr: %s", err, d.stderr.String())
	}
	if netns.Exists(ns) {
		t.Fatalf("namespace %s still exists after SIGTERM", ns)
	}
	if out, _ := exec.Command("ip", "-o", "link").Output(); strings.Contains(string(out), tap) || strings.Contains(string(out), ": tst") {
		t.Fatalf("a TAP is left behind:\n%s", out)
	}
}

func TestUpKeepsANamespaceItDidNotCreate(t *testing.T) {
	nstest.Require(t)
	ns := nshost.UniqueName("tsown-")
	noteNetns(ns)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	d := startUp(t, "--netns", ns, "--tap", "tap0")
	if out, err := inNS(ns, 10*time.Second, nil, "ping", "-c", "1", "-W", "2", "10.0.2.2"); err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("exit: %v; stderr: %s", err, d.stderr.String())
	}
	if !netns.Exists(ns) {
		t.Fatal("tapstack up deleted a namespace it did not create")
	}
	if out, _ := inNS(ns, 5*time.Second, nil, "ip", "-o", "link"); strings.Contains(out, "tap0") {
		t.Fatalf("the TAP is left in the namespace:\n%s", out)
	}
}

func TestCLIErrorsAreOneLine(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"up", "--bogus"}, "flag provided but not defined"},
		{[]string{"up", "--addr", "10.0.2.2"}, "not an address with prefix length"},
		{[]string{"up", "--mtu", "70000", "--netns", "tsbad-mtu"}, "MTU 70000 out of range"},
		{[]string{"up", "--max-sockets", "0"}, "--max-sockets 0"},
		{[]string{"up", "--tx-queues", "-1"}, "--tx-queues -1"},
		{[]string{"up", "--procs", "-1"}, "--procs -1"},
		{[]string{"up", "--tx-queues", "65"}, "--tx-queues 65"},
		{[]string{"up", "--serve", "chargen"}, "unknown service"},
		{[]string{"up", "extra"}, "unexpected argument"},
		{[]string{"frobnicate"}, "unknown command"},
	}
	for _, c := range cases {
		cmd := exec.Command(tapstackBin, c.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if err == nil {
			t.Errorf("tapstack %v: exit 0, want an error", c.args)
			continue
		}
		msg := strings.TrimRight(stderr.String(), "\n")
		if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, c.want) || strings.Contains(msg, "goroutine") {
			t.Errorf("tapstack %v: stderr %q, want one line containing %q", c.args, msg, c.want)
		}
	}
	if netns.Exists("tsbad-mtu") {
		exec.Command("ip", "netns", "del", "tsbad-mtu").Run()
		t.Error("a bad MTU left a namespace behind")
	}
	out, err := exec.Command(tapstackBin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "tapstack ") {
		t.Errorf("tapstack version: %q, %v", out, err)
	}
	for _, sub := range []string{"up", "version"} {
		out, err := exec.Command(tapstackBin, sub, "-h").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Usage: tapstack "+sub) {
			t.Errorf("tapstack %s -h: %v %q", sub, err, out)
		}
	}
}

func TestUpWithoutPrivilegeSaysSo(t *testing.T) {
	nstest.Require(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		cienv.Skip(t, "needs setpriv (util-linux) to drop privileges")
	}
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", tapstackBin, "up", "--netns", "tsnopriv")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "HOME=/")
	err = cmd.Run()
	msg := strings.TrimSpace(stderr.String())
	if err == nil || strings.Contains(msg, "\n") || !strings.Contains(msg, "root") {
		t.Fatalf("unprivileged up: %v, stderr %q; want a non-zero exit and one line about privilege", err, msg)
	}
}

func TestBenchQuickJSON(t *testing.T) {
	nstest.Require(t)
	if _, err := exec.LookPath("iperf3"); err != nil {
		cienv.Skip(t, "bench: skipped: needs iperf3")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The peers join when installed (CI installs both).
	wantPaths := []string{"kernel veth", "tapstack sockets", "tapstack relay", "tapstack flow relay"}
	var peers []string
	for _, p := range []string{"slirp4netns", "pasta"} {
		if _, err := exec.LookPath(p); err == nil {
			peers = append(peers, p)
		}
	}
	wantPaths = append(wantPaths, peers...)
	out, err := exec.CommandContext(ctx, tapstackBin, "bench", "--quick", "--json", "--time", "1s").Output()
	if err != nil {
		t.Fatalf("tapstack bench: %v", err)
	}
	var rep struct {
		Paths   []string
		Results []struct {
			Case, Path, Unit, Error string
			Value                   float64
		}
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("bench JSON: %v\n%s", err, out)
	}
	if strings.Join(rep.Paths, ",") != strings.Join(wantPaths, ",") {
		t.Fatalf("paths %v, want %v", rep.Paths, wantPaths)
	}
	seen := map[string]bool{}
	for _, r := range rep.Results {
		if r.Error != "" {
			t.Errorf("%s / %s failed: %s", r.Path, r.Case, r.Error)
		}
		if r.Value <= 0 && r.Unit != "%" {
			t.Errorf("%s / %s: %v %s, want a positive figure", r.Path, r.Case, r.Value, r.Unit)
		}
		seen[r.Path+"/"+r.Case] = true
	}
	every := []string{"TCP 1 stream ns→server", "TCP 1 stream server→ns", "TCP 4 streams ns→server", "TCP 4 streams server→ns",
		"UDP full rate, received", "UDP full rate, loss",
		"TCP RR avg", "TCP RR p99", "UDP RR avg", "UDP RR p99", "TCP connections/s (sequential)", "TCP connections/s (16 parallel)"}
	daemon := []string{"CPU s per GB (TCP ns→server)", "CPU µs per TCP exchange", "CPU µs per UDP exchange", "CPU µs per connection",
		"daemon RSS idle", "daemon RSS, 1000 idle conns"}
	for _, p := range wantPaths {
		want := every
		switch p {
		case "kernel veth":
		case "tapstack sockets", "tapstack relay", "tapstack flow relay":
			want = append(append(append([]string{}, every...), daemon...), "daemon RSS, 10000 idle conns")
		default:
			want = append(append([]string{}, every...), daemon...)
		}
		for _, c := range want {
			if !seen[p+"/"+c] {
				t.Errorf("no figure for %s / %s", p, c)
			}
		}
	}
	if netnsLeft(t, "tsb") {
		t.Error("bench left a namespace behind")
	}
}

// TestBenchAgainstABaseline runs two builds side by side on the picked
// paths and cases, as an A/B of a change is measured.
func TestBenchAgainstABaseline(t *testing.T) {
	nstest.Require(t)
	for _, bad := range [][]string{{"--against", "/nonexistent/tapstack"}, {"--against", "/"}, {"--cases", "("}, {"--paths", "[a"}} {
		out, err := exec.Command(tapstackBin, append([]string{"bench"}, bad...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), bad[0]) {
			t.Errorf("bench %v: %v %q; want an error naming %s", bad, err, out, bad[0])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, tapstackBin, "bench", "--quick", "--against", tapstackBin, "--paths", "^(tapstack|baseline) relay$", "--cases", "RR avg|sequential").Output()
	if err != nil {
		t.Fatalf("tapstack bench: %v", err)
	}
	table := string(out)
	if !strings.Contains(table, "| tapstack relay | baseline relay |") || !strings.Contains(table, "relay ÷ baseline |") {
		t.Fatalf("no baseline columns:\n%s", table)
	}
	var rows []string
	for _, l := range strings.Split(table, "\n") {
		if strings.HasPrefix(l, "| ") && !strings.HasPrefix(l, "| case") {
			rows = append(rows, l)
		}
	}
	if len(rows) != 3 {
		t.Fatalf("want the rows TCP RR avg, UDP RR avg and sequential connections, got:\n%s", table)
	}
	for _, r := range rows {
		f := strings.Split(r, " | ")
		// case, unit, relay, baseline relay, 3 ratios to kernel and
		// peers (none here), sockets ÷ baseline (none), relay ÷ baseline.
		if len(f) != 9 || f[2] == "-" || f[2] == "fail" || f[3] == "-" || f[3] == "fail" || strings.TrimSuffix(f[8], " |") == "-" {
			t.Errorf("row %q: want figures for both builds and their ratio", r)
		}
	}
	if netnsLeft(t, "tsb") {
		t.Error("bench left a namespace behind")
	}
}

func TestUpWithOffloads(t *testing.T) {
	nstest.Require(t)
	ns := nshost.UniqueName("tsoff-")
	d := startUp(t, "--netns", ns, "--tap", "tap0", "--mtu", "1500", "--offload")
	if out, err := inNS(ns, 10*time.Second, nil, "ping", "-c", "1", "-W", "2", "10.0.2.2"); err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	// 4 MiB each way: the kernel hands over 64 KiB segments with partial
	// checksums, and takes them from the stack.
	for _, host := range []string{"10.0.2.2", "fd00::2"} {
		out, err := inNS(ns, 60*time.Second, nil, "python3", "-c", nstest.EchoClientPy, host, "7", fmt.Sprint(4<<20))
		var sent, got string
		var n int
		fmt.Sscanf(strings.TrimSpace(out), "sent=%s got=%s n=%d", &sent, &got, &n)
		if err != nil || sent == "" || sent != got || n != 4<<20 {
			t.Fatalf("echo of 4 MiB via %s with offloads: %v %q", host, err, out)
		}
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("exit: %v; %s", err, d.stderr.String())
	}
}
