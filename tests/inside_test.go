package tests

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/relay"
)

// pySlowHTTP answers every HTTP request on argv[1]:argv[2] with the file
// argv[3], 64 KiB every 1/16 s: 1 MiB/s.
const pySlowHTTP = `
import socket, sys, threading, time
data = open(sys.argv[3], "rb").read()
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
def serve(c):
    try:
        c.recv(4096)
        c.sendall(b"HTTP/1.0 200 slowly\r\nContent-Length: %d\r\n\r\n" % len(data))
        for i in range(0, len(data), 65536):
            c.sendall(data[i:i+65536]); time.sleep(1/16)
    except OSError:
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`

// scrape fetches the daemon's /metrics in the outer namespace and parses
// it with the Prometheus text parser.
func (o *outer) scrape(addr string) map[string]*dto.MetricFamily {
	o.t.Helper()
	out, err := exec.Command("ip", "netns", "exec", o.name, "curl", "-sf", "--max-time", "10", "http://"+addr+"/metrics").Output()
	if err != nil {
		o.t.Fatalf("curl /metrics: %v", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(out)))
	if err != nil {
		o.t.Fatalf("parse /metrics: %v\n%s", err, out)
	}
	return fams
}

// metric is the value of the family's sample whose labels include want.
func metric(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// tapstackCtl runs a tapstack client command against the daemon's
// control socket.
func tapstackCtl(t *testing.T, ctl string, args ...string) string {
	t.Helper()
	out, err := exec.Command(tapstackBin, append(append(args[:1:1], "--control", ctl), args[1:]...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("tapstack %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// waitPcap waits until tcpdump (or tshark) reads every one of want in
// the capture file: it is flushed once a second.
func waitPcap(t *testing.T, tool, file string, want ...string) string {
	t.Helper()
	var text string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		args := []string{"-nn", "-r", file}
		if tool == "tshark" {
			args = []string{"-n", "-r", file}
		}
		out, err := exec.Command(tool, args...).CombinedOutput()
		text = string(out)
		missing := ""
		for _, w := range want {
			if !strings.Contains(text, w) {
				missing = w
				break
			}
		}
		if err == nil && missing == "" {
			return text
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s -r %s (%v) lacks %q:\n%s", tool, file, err, missing, text)
		}
	}
}

// TestSeeingInside: a daemon with --pcap, --metrics and --socket-sites;
// a ping, a fetch and a rate-limited download through the relay; the
// --pcap file read back by tshark and tcpdump; a capture started and
// stopped at run time, to a file and as a live stream; tapstack ss
// showing the download's bytes growing; tapstack status; the metrics
// parsed by Prometheus's parser, with the relay's byte counters moving
// by what was fetched.
func TestSeeingInside(t *testing.T) { engines(t, testSeeingInside) }

func testSeeingInside(t *testing.T, flags []string) {
	flow := flags[1] == relay.EngineFlow
	cienv.RequireTool(t, "tshark")
	cienv.RequireTool(t, "tcpdump")
	o := newOuter(t)
	small := "seen from inside\n"
	o.httpServer(8080, small)
	big := make([]byte, 4<<20)
	rand.Read(big)
	sum := sha256.Sum256(big)
	blob := filepath.Join(o.dir, "blob")
	os.WriteFile(blob, big, 0o644)
	o.bg("python3", "-c", pySlowHTTP, outerV4, "8081", blob)
	o.waitTCP(outerV4, 8081)

	ns := ncNamespace(t)
	pcapFile := filepath.Join(o.dir, "up.pcap")
	const metricsAddr = "127.0.0.1:9464"
	logFile, err := os.Create(filepath.Join(o.dir, "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	d := &daemon{t: t, ctl: filepath.Join(o.dir, "see.sock")}
	cmd, _ := o.upInTo(logFile, "--netns", ns, "--control", d.ctl, "--serve", "none", "--pcap", pcapFile, "--metrics", metricsAddr,
		"--socket-sites", "--log-format", "json", "-v", "-p", "127.0.0.1:18080:8080", flags[0], flags[1])
	d.pid = cmd.Process.Pid
	before := o.scrape(metricsAddr)
	downBefore, ok := metric(before, "tapstack_relay_bytes_total", map[string]string{"direction": "down", "netns": ns})
	if !ok {
		t.Fatalf("no tapstack_relay_bytes_total{direction=down,netns=%s} in /metrics", ns)
	}

	// A capture at run time, to a file and as a stream.
	rtFile := filepath.Join(o.dir, "runtime.pcap")
	if out := tapstackCtl(t, d.ctl, "capture", rtFile); !strings.Contains(out, "capturing to "+rtFile) {
		t.Fatalf("tapstack capture FILE: %q", out)
	}
	streamFile := filepath.Join(o.dir, "stream.pcap")
	sf, err := os.Create(streamFile)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	stream := exec.Command(tapstackBin, "capture", "--control", d.ctl, "-")
	var streamErr strings.Builder
	stream.Stdout, stream.Stderr = sf, &streamErr
	if err := stream.Start(); err != nil {
		t.Fatal(err)
	}
	streamDone := make(chan error, 1)
	go func() { streamDone <- stream.Wait() }()
	t.Cleanup(func() {
		if stream.ProcessState == nil {
			stream.Process.Kill()
		}
	})
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(tapstackCtl(t, d.ctl, "capture"), "-"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the stream is not listed: %q", tapstackCtl(t, d.ctl, "capture"))
		}
	}

	if out, err := inNS(ns, 20*time.Second, nil, "ping", "-c", "2", "-W", "2", outerV4); err != nil {
		t.Fatalf("ping through the relay: %v\n%s", err, out)
	}
	if out, err := inNS(ns, 20*time.Second, nil, "curl", "-sf", "--max-time", "10", fmt.Sprintf("http://%s:8080/", outerV4)); err != nil || out != small {
		t.Fatalf("curl through the relay: %v %q", err, out)
	}

	// A download at 1 MiB/s: four seconds to watch it grow.
	dl := filepath.Join(o.dir, "downloaded")
	curl := exec.Command("ip", "netns", "exec", ns, "curl", "-sf", "-o", dl, fmt.Sprintf("http://%s:8081/blob", outerV4))
	if err := curl.Start(); err != nil {
		t.Fatal(err)
	}
	curlDone := make(chan error, 1)
	go func() { curlDone <- curl.Wait() }()
	t.Cleanup(func() {
		if curl.ProcessState == nil {
			curl.Process.Kill()
			<-curlDone
		}
	})
	download := func() (uint64, string) {
		var r struct {
			Flows []struct {
				Proto, Kind, Dst, State string
				Down                    uint64 `json:"bytes_down"`
			}
			SocketsInUse int `json:"sockets_in_use"`
			Sockets      []struct{ Site string }
		}
		out := tapstackCtl(t, d.ctl, "ss", "--json", "-a")
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("ss --json: %v\n%s", err, out)
		}
		for _, f := range r.Flows {
			if f.Proto == "tcp" && f.Kind == "relay" && f.Dst == outerV4+":8081" {
				return f.Down, out
			}
		}
		return 0, out
	}
	var first uint64
	var ssJSON string
	for deadline := time.Now().Add(10 * time.Second); first == 0; time.Sleep(100 * time.Millisecond) {
		if first, ssJSON = download(); time.Now().After(deadline) {
			t.Fatalf("tapstack ss shows no download:\n%s", ssJSON)
		}
	}
	time.Sleep(1200 * time.Millisecond)
	second, _ := download()
	if second <= first {
		t.Fatalf("the download's bytes did not grow in 1.2 s: %d then %d", first, second)
	}
	// The stack engine's connection is a socket of the stack's, made
	// by the relay; the flow engine's is a record of its own, which ss
	// describes.
	if !flow && !strings.Contains(ssJSON, "relay/catch.go:") {
		t.Errorf("ss -a --json names no socket made by the relay:\n%s", ssJSON)
	}
	if flow && !strings.Contains(ssJSON, `"engine":"snd_una:`) {
		t.Errorf("ss --json has no flow engine state of the download:\n%s", ssJSON)
	}
	text := tapstackCtl(t, d.ctl, "ss")
	if !strings.Contains(text, outerV4+":8081") || !strings.Contains(text, "established") {
		t.Errorf("tapstack ss lacks the download:\n%s", text)
	}
	t.Logf("tapstack ss during the download (%d, then %d bytes down):\n%s", first, second, text)
	// A connection through the port forward, counted in ss.
	waitPeer := kernelPeer(t, ns, pyTCPServer, "4", "8080")
	fwdOut, err := exec.Command("ip", "netns", "exec", o.name, "python3", "-c",
		`import socket; s=socket.create_connection(("127.0.0.1", 18080), timeout=5); s.sendall(b"fwd"); s.shutdown(1); print(s.recv(100).decode(), end="")`).CombinedOutput()
	if err != nil || string(fwdOut) != "got:fwd" {
		t.Fatalf("through the forward: %v %q", err, fwdOut)
	}
	waitPeer()
	var fwds struct {
		Forwards []struct {
			Spec  string
			Conns uint64 `json:"connections"`
			Up    uint64 `json:"bytes_up"`
			Down  uint64 `json:"bytes_down"`
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		err := json.Unmarshal([]byte(tapstackCtl(t, d.ctl, "ss", "--json")), &fwds)
		if err == nil && len(fwds.Forwards) == 1 && fwds.Forwards[0].Conns == 1 && fwds.Forwards[0].Up == 7 && fwds.Forwards[0].Down == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ss --json: the forward's counters: %+v (%v), want 1 connection, 7 bytes up, 3 down", fwds, err)
		}
	}
	// -w refreshes once a second.
	watch := exec.Command(tapstackBin, "ss", "--control", d.ctl, "-w", "--json")
	var watched strings.Builder
	watch.Stdout = &watched
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	watch.Process.Signal(os.Interrupt)
	if err := watch.Wait(); err != nil {
		t.Errorf("ss -w ended with %v on SIGINT", err)
	}
	if n := strings.Count(watched.String(), `"flows"`); n < 2 || n > 4 {
		t.Errorf("ss -w printed %d reports in 2.5 s, want 3:\n%s", n, watched.String())
	}

	status := tapstackCtl(t, d.ctl, "status")
	// The flow engine's loop reads the TAP itself; the stack engine
	// leaves it to the link's goroutines.
	reader := "read by the link's goroutines"
	if flow {
		reader = "read by the flow engine's loop"
	}
	for _, want := range []string{"namespace   " + ns, "MTU 65520", "10.0.2.100/24", "relayed now (" + flags[1] + " engine), 1 port forwards", rtFile, reader} {
		if !strings.Contains(status, want) {
			t.Errorf("tapstack status lacks %q:\n%s", want, status)
		}
	}
	select {
	case err := <-curlDone:
		if err != nil {
			t.Fatalf("the download: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the download did not end in 60 s")
	}
	got, _ := os.ReadFile(dl)
	if gs := sha256.Sum256(got); gs != sum {
		t.Fatalf("downloaded %d bytes with SHA-256 %x, want %x", len(got), gs, sum)
	}

	after := o.scrape(metricsAddr)
	downAfter, _ := metric(after, "tapstack_relay_bytes_total", map[string]string{"direction": "down", "netns": ns})
	if downAfter-downBefore < float64(len(big)+len(small)) {
		t.Errorf("tapstack_relay_bytes_total{direction=down} moved by %.0f, want at least %d", downAfter-downBefore, len(big)+len(small))
	}
	// The flow engine takes the relayed frames before the stack's NIC.
	nicMin, divertedMin := 20.0, 0.0
	if flow {
		nicMin, divertedMin = 1, 20
	}
	for _, m := range []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"tapstack_relay_dial_duration_seconds", nil, 2},
		{"tapstack_relay_dials_started_total", nil, 2},
		{"tapstack_relay_flows_total", map[string]string{"proto": "tcp"}, 2},
		{"tapstack_relay_flows_total", map[string]string{"proto": "icmp"}, 1},
		{"tapstack_nic_rx_packets_total", map[string]string{"nic": "tap0"}, nicMin},
		{"tapstack_link_rx_diverted_total", nil, divertedMin},
		{"tapstack_link_frames_total", map[string]string{"direction": "in"}, 20},
		{"tapstack_sockets_limit", nil, 1},
		{"go_goroutines", nil, 1},
		{"process_resident_memory_bytes", nil, 1 << 20},
	} {
		v, ok := metric(after, m.name, m.labels)
		if !ok || v < m.min {
			t.Errorf("%s%v = %v (present %v), want at least %v", m.name, m.labels, v, ok, m.min)
		}
	}

	// Stopping the captures ends the stream.
	if out := tapstackCtl(t, d.ctl, "capture", "--stop"); !strings.Contains(out, "stopped 2 captures") {
		t.Fatalf("capture --stop: %q", out)
	}
	select {
	case err := <-streamDone:
		if err != nil {
			t.Fatalf("the capture stream exited: %v %s", err, streamErr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the capture stream did not end with --stop")
	}
	// The download is in the run-time captures; everything is in --pcap's.
	for _, f := range []string{rtFile, streamFile} {
		waitPcap(t, "tcpdump", f, "10.0.2.100.", outerV4+".8081: Flags [S]", "ICMP echo request")
	}
	out := waitPcap(t, "tshark", pcapFile, "ICMP", "Echo (ping) request", "Echo (ping) reply", "GET / HTTP/1.1", "GET /blob HTTP/1.1", "HTTP/1.0 200 OK", "HTTP/1.0 200 slowly")
	if strings.Contains(out, "appears to be damaged") || strings.Contains(out, "cut short") {
		t.Fatalf("tshark complains about %s:\n%s", pcapFile, out)
	}
	for deadline := time.Now().Add(10 * time.Second); d.stats()["active_flows"] != 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("flows left after the test: %v", d.stats())
		}
	}

	// The log: JSON lines, each naming the namespace; the download's
	// flow logged at its start and end with its five-tuple and bytes.
	logs, _ := os.ReadFile(logFile.Name())
	var start, end bool
	for _, l := range strings.Split(strings.TrimSpace(string(logs)), "\n") {
		var e struct {
			Level, Msg, Netns, Proto, Src, Dst string
			Down                               uint64 `json:"bytes_down"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Netns != ns || e.Level == "" {
			t.Fatalf("log line %q: %v; want JSON naming the namespace %s", l, err, ns)
		}
		if e.Proto == "tcp" && e.Dst == outerV4+":8081" && strings.HasPrefix(e.Src, "10.0.2.100:") {
			start = start || e.Msg == "flow start" && e.Level == "DEBUG"
			end = end || e.Msg == "flow end" && e.Down == uint64(len(big))+uint64(len("HTTP/1.0 200 slowly\r\nContent-Length: 4194304\r\n\r\n"))
		}
	}
	if !start || !end {
		t.Errorf("the log lacks the download's flow start (%v) or end with its bytes (%v):\n%s", start, end, logs)
	}
}

// TestRunAndNCWritePcap: --pcap on run and nc captures their exchanges;
// with --pcap-size the files rotate and --pcap-files of them are kept,
// each one whole.
func TestRunAndNCWritePcap(t *testing.T) {
	cienv.RequireTool(t, "tcpdump")
	o := newOuter(t)
	o.httpServer(8000, strings.Repeat("x", 3<<20))
	file := filepath.Join(o.dir, "run.pcap")
	out, errs, code := o.run(60*time.Second, []string{"--pcap", file, "--pcap-size", "1", "--pcap-files", "2"},
		"sh", "-c", fmt.Sprintf("curl -sS --max-time 20 http://%s:8000/ | wc -c", outerV4))
	if code != 0 || strings.TrimSpace(out) != fmt.Sprint(3<<20) {
		t.Fatalf("run curl: exit %d, %q, %s", code, out, errs)
	}
	for _, f := range []string{file, file + ".1", file + ".2"} {
		st, err := os.Stat(f)
		if err != nil || st.Size() > 1<<20 {
			t.Fatalf("%s: %v, want a file of at most 1 MiB", f, err)
		}
		if out, err := exec.Command("tcpdump", "-nn", "-r", f).CombinedOutput(); err != nil || !strings.Contains(string(out), "IP ") {
			t.Fatalf("tcpdump -r %s: %v\n%s", f, err, out)
		}
	}
	if _, err := os.Stat(file + ".3"); err == nil {
		t.Fatal("a third rotated file was kept, want --pcap-files 2")
	}

	ns := ncNamespace(t)
	wait := kernelPeer(t, ns, pyTCPServer, "4", "5555")
	ncFile := filepath.Join(o.dir, "nc.pcap")
	if out, errs, err := runNC(t, "hello capture", "--netns", ns, "--pcap", ncFile, "10.0.2.100", "5555"); err != nil || out != "got:hello capture" {
		t.Fatalf("nc: %q %v %s", out, err, errs)
	}
	wait()
	waitPcap(t, "tcpdump", ncFile, "10.0.2.2.", "> 10.0.2.100.5555: Flags [S]", "length 13")
	if _, _, err := runNC(t, "", "--netns", ns, "--pcap", ncFile, "--pcap-snaplen", "10", "10.0.2.100", "5555"); err == nil {
		t.Fatal("--pcap-snaplen 10 accepted")
	}
}
