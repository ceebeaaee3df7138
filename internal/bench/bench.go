// Package bench measures tapstack the way its users would, side by side in
// one run: a namespace talking to tapstack's own sockets, a namespace
// reaching its host through tapstack's relay, the same over a kernel veth
// pair (the upper bound here) and, when installed, through slirp4netns and
// pasta. It builds its own namespaces and removes them.
//
// Start at Run.
package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Server addresses in the outer ("host") namespace.
const (
	hostAddr = "198.51.100.1"
	stackIP  = "10.0.2.2"
)

// Options configure a run.
type Options struct {
	// Binary is the tapstack executable to measure.
	Binary string
	// Duration of each throughput case (5 s; 1 s when Quick).
	Duration time.Duration
	// Quick runs every case, shorter and with fewer samples, and weighs
	// the peers with 1000 connections only (under a minute).
	Quick bool
	// Peers adds slirp4netns and pasta when installed.
	Peers bool
	// MTU of every path (65520).
	MTU int
	// Offload runs tapstack's TAPs with virtio_net_hdr offloads.
	Offload bool
	// TxQueues is passed to tapstack up as --tx-queues.
	TxQueues int
	// Against, if set, is another tapstack executable measured in the
	// same run as the paths "baseline sockets" and "baseline relay": an
	// A/B of two builds side by side.
	Against string
	// Cases and Paths, if set, pick the cases and paths (by name) to
	// run; the others are skipped.
	Cases, Paths *regexp.Regexp
	// Progress, if set, gets one line per case as it runs.
	Progress io.Writer
}

// Result is one figure of one path.
type Result struct {
	Case  string  `json:"case"`
	Path  string  `json:"path"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Err   string  `json:"error,omitempty"`
}

// Report is a whole run.
type Report struct {
	MTU      int      `json:"mtu"`
	Offload  bool     `json:"offload"`
	TxQueues int      `json:"tx_queues"`
	Duration string   `json:"duration_per_case"`
	Paths    []string `json:"paths"`
	Results  []Result `json:"results"`
}

// path is one way a namespace reaches a server.
type path struct {
	name string
	// server is the address of the servers this path talks to.
	server string
	// wrap returns the argv that runs argv inside the path's namespace.
	wrap func(argv ...string) []string
	// pid of the process to watch for CPU and memory (0: none).
	pid int
	// pidFile, for a peer started afresh by every wrapped command, holds
	// the PID of the current one; when the command ends the wrapper
	// copies the peer's /proc/PID/stat to pidFile+".stat".
	pidFile string
	// echo and sink ports on server.
	echoPort, sinkPort int
}

type runner struct {
	opts    Options
	id      string
	outer   string
	tmp     string
	cleanup []func()
	rep     Report
}

func randID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Run runs the benchmark and returns its report.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if opts.Duration <= 0 {
		opts.Duration = 5 * time.Second
		if opts.Quick {
			opts.Duration = time.Second
		}
	}
	if opts.MTU == 0 {
		opts.MTU = 65520
	}
	for _, tool := range []string{"ip", "iperf3", "python3", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("bench needs %s on PATH", tool)
		}
	}
	r := &runner{opts: opts, id: randID()}
	r.rep.MTU = opts.MTU
	r.rep.Offload = opts.Offload
	r.rep.TxQueues = opts.TxQueues
	r.rep.Duration = opts.Duration.String()
	defer r.close()
	var err error
	if r.tmp, err = os.MkdirTemp("", "tapstack-bench-"); err != nil {
		return nil, err
	}
	r.cleanup = append(r.cleanup, func() { os.RemoveAll(r.tmp) })
	if err := r.setupOuter(ctx); err != nil {
		return nil, err
	}
	paths, err := r.setupPaths(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		r.rep.Paths = append(r.rep.Paths, p.name)
	}
	// Case by case, each through every path before the next, the first
	// path one further on each time: the paths a case compares are
	// measured seconds apart, not minutes (this machine's speed drifts by
	// a third over a run), and no path is always first.
	for g, measure := range r.groups() {
		for k := range paths {
			if err := ctx.Err(); err != nil {
				return &r.rep, err
			}
			measure(ctx, paths[(g+k)%len(paths)])
		}
	}
	return &r.rep, nil
}

func (r *runner) close() {
	for i := len(r.cleanup) - 1; i >= 0; i-- {
		r.cleanup[i]()
	}
}

func (r *runner) progress(format string, args ...any) {
	if r.opts.Progress != nil {
		fmt.Fprintf(r.opts.Progress, format+"\n", args...)
	}
}

func run(ctx context.Context, argv ...string) (string, error) {
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := c.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// bg starts argv and stops it at cleanup; it returns the process.
func (r *runner) bg(argv ...string) (*exec.Cmd, error) {
	c := exec.Command(argv[0], argv[1:]...)
	c.Stdout, c.Stderr = io.Discard, io.Discard
	if err := c.Start(); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	r.cleanup = append(r.cleanup, func() {
		_ = c.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	})
	return c, nil
}

func (r *runner) netnsAdd(ctx context.Context, name string) error {
	if _, err := run(ctx, "ip", "netns", "add", name); err != nil {
		return err
	}
	r.cleanup = append(r.cleanup, func() { exec.Command("ip", "netns", "del", name).Run() })
	return nil
}

// setupOuter makes the "host": a namespace whose loopback holds the
// servers, so nothing here reaches a real network.
func (r *runner) setupOuter(ctx context.Context) error {
	r.outer = "tsbench-" + r.id
	if err := r.netnsAdd(ctx, r.outer); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", hostAddr + "/32", "dev", "lo"},
		// pasta wants an external interface with a default route.
		{"link", "add", "tsbx0", "mtu", strconv.Itoa(r.opts.MTU), "type", "veth", "peer", "name", "tsbx1"},
		{"addr", "add", "192.0.2.1/24", "dev", "tsbx0"},
		{"link", "set", "tsbx0", "up"},
		{"link", "set", "tsbx1", "up"},
		{"route", "add", "default", "via", "192.0.2.2", "dev", "tsbx0"},
	} {
		if _, err := run(ctx, append([]string{"ip", "-n", r.outer}, args...)...); err != nil {
			return err
		}
	}
	in := func(argv ...string) []string { return append([]string{"ip", "netns", "exec", r.outer}, argv...) }
	// Every path's relay dials from this namespace, and each connection
	// a relay closes first leaves its port in TIME-WAIT for a minute: the
	// connection-rate and 10 000-connection cases of one path left the
	// next path's dials searching a nearly full port range (pasta's
	// 10 000 connections timed out after tapstack's). More ports, and
	// TIME-WAIT ports reused, keep each path from paying for the last.
	if _, err := run(ctx, in("sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=10000 65535", "net.ipv4.tcp_tw_reuse=1")...); err != nil {
		return err
	}
	if _, err := r.bg(in("iperf3", "-s", "-B", hostAddr)...); err != nil {
		return err
	}
	if _, err := r.bg(in("python3", "-c", pyServers, hostAddr, "7", "9")...); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	return nil
}

// pyServers is an echo server (argv[2], TCP and UDP) and a discard
// server (argv[3], TCP) on argv[1], in one thread around epoll: the
// same server for every path, and one that holds 10 000 idle
// connections without a thread each.
const pyServers = `
import resource, selectors, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host, echo, sink = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sel = selectors.DefaultSelector()
for port, kind in ((echo, "echo"), (sink, "sink")):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(4096)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, ("accept", kind))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((host, echo))
u.setblocking(False)
sel.register(u, selectors.EVENT_READ, ("udp", None))
def drop(c):
    sel.unregister(c)
    c.close()
while True:
    for key, _ in sel.select():
        what, kind = key.data
        if what == "accept":
            while True:
                try:
                    c, _ = key.fileobj.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                c.setblocking(False)
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(c, selectors.EVENT_READ, ("conn", kind))
        elif what == "conn":
            c = key.fileobj
            try:
                b = c.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                b = b""
            if not b:
                drop(c)
            elif kind == "echo":
                try:
                    c.sendall(b)
                except OSError:
                    drop(c)
        else:
            try:
                b, a = u.recvfrom(65536)
                u.sendto(b, a)
            except OSError:
                pass
`

func (r *runner) setupPaths(ctx context.Context) ([]path, error) {
	var paths []path
	mtu := strconv.Itoa(r.opts.MTU)

	// The kernel: a veth pair from a namespace into the outer one.
	kv := "tsbk-" + r.id
	if err := r.netnsAdd(ctx, kv); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"-n", r.outer, "link", "add", "tsbk0", "mtu", mtu, "type", "veth", "peer", "name", "tsbk1", "mtu", mtu, "netns", kv},
		{"-n", r.outer, "addr", "add", "192.0.3.1/24", "dev", "tsbk0"},
		{"-n", r.outer, "link", "set", "tsbk0", "up"},
		{"-n", kv, "addr", "add", "192.0.3.2/24", "dev", "tsbk1"},
		{"-n", kv, "link", "set", "tsbk1", "up"},
		{"-n", kv, "link", "set", "lo", "up"},
		{"-n", kv, "route", "add", "default", "via", "192.0.3.1"},
	} {
		if _, err := run(ctx, append([]string{"ip"}, args...)...); err != nil {
			return nil, err
		}
	}
	if r.wantPath("kernel veth") {
		paths = append(paths, path{name: "kernel veth", server: hostAddr, echoPort: 7, sinkPort: 9,
			wrap: func(a ...string) []string { return append([]string{"ip", "netns", "exec", kv}, a...) }})
	}

	builds := []struct{ name, bin, tag string }{{"tapstack", r.opts.Binary, ""}}
	if r.opts.Against != "" {
		builds = append(builds, struct{ name, bin, tag string }{"baseline", r.opts.Against, "b"})
	}
	for _, b := range builds {
		// tapstack's own sockets: a namespace against the stack's services.
		if name := b.name + " sockets"; r.wantPath(name) {
			ta := "tsba" + b.tag + "-" + r.id
			up, err := r.startUp(ctx, b.bin, false, ta, "--serve", "echo,discard,iperf3")
			if err != nil {
				return nil, err
			}
			paths = append(paths, path{name: name, server: stackIP, echoPort: 7, sinkPort: 9, pid: up,
				wrap: func(a ...string) []string { return append([]string{"ip", "netns", "exec", ta}, a...) }})
		}
		// tapstack's relay: the daemon runs in the outer namespace; this
		// build's on the stack engine (the flow engine, its default,
		// is the next path), a baseline on its own default.
		if name := b.name + " relay"; r.wantPath(name) {
			tb := "tsbr" + b.tag + "-" + r.id
			if err := r.netnsAdd(ctx, tb); err != nil {
				return nil, err
			}
			args := []string{"--serve", "none"}
			if b.tag == "" {
				args = append(args, "--relay-engine", "stack")
			}
			relay, err := r.startUp(ctx, b.bin, true, tb, args...)
			if err != nil {
				return nil, err
			}
			paths = append(paths, path{name: name, server: hostAddr, echoPort: 7, sinkPort: 9, pid: relay,
				wrap: func(a ...string) []string { return append([]string{"ip", "netns", "exec", tb}, a...) }})
		}
		// The same relay on the flow engine (--relay-engine flow).
		if name := b.name + " flow relay"; b.tag == "" && r.wantPath(name) {
			tf := "tsbf-" + r.id
			if err := r.netnsAdd(ctx, tf); err != nil {
				return nil, err
			}
			relay, err := r.startUp(ctx, b.bin, true, tf, "--serve", "none", "--relay-engine", "flow")
			if err != nil {
				return nil, err
			}
			paths = append(paths, path{name: name, server: hostAddr, echoPort: 7, sinkPort: 9, pid: relay,
				wrap: func(a ...string) []string { return append([]string{"ip", "netns", "exec", tf}, a...) }})
		}
	}

	if r.opts.Peers {
		if _, err := exec.LookPath("slirp4netns"); err == nil && r.wantPath("slirp4netns") {
			pf := filepath.Join(r.tmp, "slirp4netns.pid")
			paths = append(paths, path{name: "slirp4netns", server: hostAddr, echoPort: 7, sinkPort: 9, pidFile: pf,
				wrap: func(a ...string) []string { return r.slirpWrap(pf, a...) }})
		}
		if _, err := exec.LookPath("pasta"); err == nil && r.wantPath("pasta") {
			pf := filepath.Join(r.tmp, "pasta.pid")
			paths = append(paths, path{name: "pasta", server: hostAddr, echoPort: 7, sinkPort: 9, pidFile: pf,
				wrap: func(a ...string) []string {
					argv := []string{"ip", "netns", "exec", r.outer, "pasta", "--runas", "0:0", "--config-net", "-q", "-m", mtu, "-P", pf, "--",
						"sh", "-c", statOnExit, "-", pf}
					return append(argv, a...)
				}})
		}
	}
	return paths, nil
}

// startUp runs bin's tapstack up for namespace ns (in the outer namespace when
// relay), waits for its ready line and returns its PID.
func (r *runner) startUp(ctx context.Context, bin string, relay bool, ns string, extra ...string) (int, error) {
	argv := append([]string{bin, "up", "--netns", ns, "--mtu", strconv.Itoa(r.opts.MTU),
		"--control", filepath.Join(r.tmp, ns+".sock"), "--max-sockets", "12000", "--max-flows", "11000"}, extra...)
	argv = append(argv, "--offload="+strconv.FormatBool(r.opts.Offload), "--tx-queues", strconv.Itoa(r.opts.TxQueues))
	if relay {
		argv = append([]string{"ip", "netns", "exec", r.outer}, argv...)
	}
	c := exec.Command(argv[0], argv[1:]...)
	out, err := c.StdoutPipe()
	if err != nil {
		return 0, err
	}
	c.Stderr = io.Discard
	if err := c.Start(); err != nil {
		return 0, err
	}
	done := make(chan struct{})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if !ok && strings.HasPrefix(sc.Text(), "ready") {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
		c.Wait()
		close(done)
	}()
	r.cleanup = append(r.cleanup, func() {
		_ = c.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
		if !relay {
			exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	select {
	case ok := <-ready:
		if !ok {
			return 0, fmt.Errorf("tapstack up for %s did not start", ns)
		}
	case <-time.After(20 * time.Second):
		return 0, fmt.Errorf("tapstack up for %s not ready in 20 s", ns)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return c.Process.Pid, nil
}

// statOnExit runs "$@" and then copies /proc/PID/stat of the PID in
// file $1 to $1.stat: the CPU time of a peer that exits with the command.
const statOnExit = `f=$1; shift
"$@"; rc=$?
cat /proc/$(cat "$f")/stat > "$f.stat" 2>/dev/null
exit $rc`

// slirpWrap runs argv in a fresh user+net namespace served by slirp4netns,
// started once the namespace exists (before that, it would open the
// namespace the child came from); argv starts once slirp4netns is ready.
// slirp4netns's PID goes to pidFile.
func (r *runner) slirpWrap(pidFile string, argv ...string) []string {
	fifo := filepath.Join(r.tmp, "slirp-"+randID())
	script := `fifo=$1; mtu=$2; pidfile=$3; shift 3
mkfifo "$fifo" "$fifo.in" "$fifo.ready"
exec 4<&0
unshare -rn sh -c 'echo in > "$0.in"; read x < "$0"; exec "$@"' "$fifo" "$@" <&4 &
C=$!
# slirp4netns must join the namespace only once unshare has made it.
read x < "$fifo.in"
slirp4netns --configure --mtu="$mtu" --disable-host-loopback --ready-fd=3 $C tap0 >/dev/null 2>&1 3>"$fifo.ready" &
S=$!
echo $S > "$pidfile"
read x < "$fifo.ready"
echo go > "$fifo"
wait $C; R=$?
cat /proc/$S/stat > "$pidfile.stat" 2>/dev/null
kill $S; rm -f "$fifo" "$fifo.in" "$fifo.ready"
exit $R`
	return append([]string{"ip", "netns", "exec", r.outer, "sh", "-c", script, "-", fifo, strconv.Itoa(r.opts.MTU), pidFile}, argv...)
}

func (r *runner) add(res Result) {
	if !r.wantCase(res.Case) {
		return // measured with a case that was picked
	}
	r.rep.Results = append(r.rep.Results, res)
	v := fmt.Sprintf("%.2f %s", res.Value, res.Unit)
	if res.Err != "" {
		v = "failed: " + res.Err
	}
	r.progress("  %-18s %-28s %s", res.Path, res.Case, v)
}

type iperfOut struct {
	End struct {
		SumReceived struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		Sum struct {
			BitsPerSecond float64 `json:"bits_per_second"`
			LostPercent   float64 `json:"lost_percent"`
			Bytes         float64 `json:"bytes"`
		} `json:"sum"`
	} `json:"end"`
	Error string `json:"error"`
}

// udpReceived is the rate a UDP test's server received, in bit/s: "sum"
// is the sender's rate, "sum_received" the server's; from the sender's
// rate and the loss where an iperf3 does not report "sum_received".
func (o *iperfOut) udpReceived() float64 {
	if o.End.SumReceived.Bytes > 0 {
		return o.End.SumReceived.BitsPerSecond
	}
	return o.End.Sum.BitsPerSecond * (1 - o.End.Sum.LostPercent/100)
}

func (r *runner) iperf(ctx context.Context, p path, args ...string) (iperfOut, error) {
	secs := strconv.Itoa(int(r.opts.Duration / time.Second))
	argv := p.wrap(append([]string{"iperf3", "-c", p.server, "-t", secs, "-J"}, args...)...)
	// The server may still be ending the case before (it serves one
	// test at a time and says it is busy): ask again for a while.
	for try := 0; ; try++ {
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
		var o iperfOut
		if jerr := json.Unmarshal(out, &o); jerr != nil {
			if err == nil {
				err = jerr
			}
			return o, err
		}
		if o.Error == "" {
			return o, nil
		}
		if !strings.Contains(o.Error, "server is busy") || try == iperfBusyTries-1 {
			return o, errors.New(o.Error)
		}
		select {
		case <-ctx.Done():
			return o, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// iperfBusyTries bounds the tries of a case whose server says it is
// busy (10 × 500 ms).
const iperfBusyTries = 10

// cpuSeconds reads a process's user+system CPU time.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return statCPU(string(b))
}

// statCPU is the user+system CPU time in a /proc/PID/stat line.
func statCPU(s string) float64 {
	i := strings.LastIndex(s, ")")
	if i < 0 || i+2 > len(s) {
		return 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// daemonPID is the PID to weigh for p now: tapstack's daemon, or the
// peer serving the command that is running (0: none).
func (p path) daemonPID() int {
	if p.pidFile == "" {
		return p.pid
	}
	for i := 0; i < 50; i++ {
		if b, err := os.ReadFile(p.pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0
}

// rssMiB reads a process's resident set.
func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// groups returns the bench's cases in the order they run, in groups
// that each run through one path at a time.
func (r *runner) groups() []func(context.Context, path) {
	tput := func(name string, args ...string) func(context.Context, path) {
		return func(ctx context.Context, p path) { r.tput(ctx, p, name, args...) }
	}
	return []func(context.Context, path){
		tput("TCP 1 stream ns→server"),
		tput("TCP 1 stream server→ns", "-R"),
		tput("TCP 4 streams ns→server", "-P", "4"),
		tput("TCP 4 streams server→ns", "-P", "4", "-R"),
		r.measureUDP,
		r.measureRR,
		r.measureRSS,
	}
}

// tput runs one iperf3 throughput case through p; the first, TCP 1
// stream ns→server, also weighs the daemon's CPU per GB.
func (r *runner) tput(ctx context.Context, p path, name string, args ...string) {
	if !r.wantCase(name) {
		return
	}
	cpu0 := cpuSeconds(p.pid)
	if p.pidFile != "" {
		os.Remove(p.pidFile + ".stat")
	}
	o, err := r.iperf(ctx, p, args...)
	res := Result{Case: name, Path: p.name, Unit: "Gbit/s", Value: o.End.SumReceived.BitsPerSecond / 1e9}
	if err != nil {
		res.Err = err.Error()
	}
	r.add(res)
	if err != nil || name != "TCP 1 stream ns→server" || o.End.SumReceived.Bytes <= 0 {
		return
	}
	// CPU of the daemon (tapstack) or of the peer, which starts
	// with the command and ends with it.
	cpu := -1.0
	switch {
	case p.pid != 0:
		cpu = cpuSeconds(p.pid) - cpu0
	case p.pidFile != "":
		if b, err := os.ReadFile(p.pidFile + ".stat"); err == nil {
			cpu = statCPU(string(b))
		}
	}
	if cpu >= 0 {
		r.add(Result{Case: "CPU s per GB (TCP ns→server)", Path: p.name, Unit: "s/GB",
			Value: cpu / (o.End.SumReceived.Bytes / 1e9)})
	}
}

// measureUDP runs UDP at full rate through p.
func (r *runner) measureUDP(ctx context.Context, p path) {
	if !r.wantCase("UDP full rate, received", "UDP full rate, loss") {
		return
	}
	if o, err := r.iperf(ctx, p, "-u", "-b", "0", "-l", "1400"); err == nil {
		r.add(Result{Case: "UDP full rate, received", Path: p.name, Unit: "Gbit/s", Value: o.udpReceived() / 1e9})
		r.add(Result{Case: "UDP full rate, loss", Path: p.name, Unit: "%", Value: o.End.Sum.LostPercent})
	} else {
		r.add(Result{Case: "UDP full rate, received", Path: p.name, Unit: "Gbit/s", Err: err.Error()})
	}
}

// rrCases are the figures of one pyRR run.
var rrCases = []string{"TCP RR avg", "TCP RR p99", "UDP RR avg", "UDP RR p99", "TCP connections/s (sequential)", "TCP connections/s (16 parallel)",
	"CPU µs per TCP exchange", "CPU µs per UDP exchange", "CPU µs per connection"}

// measureRR runs the request/response and connection-rate cases.
func (r *runner) measureRR(ctx context.Context, p path) {
	if !r.wantCase(rrCases...) {
		return
	}
	n := 2000
	if r.opts.Quick {
		n = 400
	}
	who := p.pidFile
	if p.pid != 0 {
		who = strconv.Itoa(p.pid)
	}
	argv := p.wrap("python3", "-c", pyRR, p.server, strconv.Itoa(p.echoPort), strconv.Itoa(p.sinkPort), strconv.Itoa(n), who)
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
	var rr struct{ TCPAvg, TCPP99, UDPAvg, UDPP99, UDPLost, ConnSeq, ConnPar, TCPCPU, UDPCPU, ConnCPU float64 }
	if err == nil {
		err = json.Unmarshal(out, &rr)
	}
	if err != nil {
		r.add(Result{Case: "TCP RR avg", Path: p.name, Unit: "µs", Err: err.Error()})
	} else {
		r.add(Result{Case: "TCP RR avg", Path: p.name, Unit: "µs", Value: rr.TCPAvg})
		r.add(Result{Case: "TCP RR p99", Path: p.name, Unit: "µs", Value: rr.TCPP99})
		udp := Result{Case: "UDP RR avg", Path: p.name, Unit: "µs", Value: rr.UDPAvg}
		if rr.UDPLost > 0 {
			udp.Err = fmt.Sprintf("%.0f of %d requests unanswered", rr.UDPLost, n)
		}
		r.add(udp)
		r.add(Result{Case: "UDP RR p99", Path: p.name, Unit: "µs", Value: rr.UDPP99})
		r.add(Result{Case: "TCP connections/s (sequential)", Path: p.name, Unit: "conn/s", Value: rr.ConnSeq})
		r.add(Result{Case: "TCP connections/s (16 parallel)", Path: p.name, Unit: "conn/s", Value: rr.ConnPar})
		// The daemon's CPU per operation: where a path is slower, this
		// tells its own work from the time it waits on the kernel.
		for _, c := range []struct {
			name string
			v    float64
		}{{"CPU µs per TCP exchange", rr.TCPCPU}, {"CPU µs per UDP exchange", rr.UDPCPU}, {"CPU µs per connection", rr.ConnCPU}} {
			if c.v >= 0 && who != "" {
				r.add(Result{Case: c.name, Path: p.name, Unit: "µs", Value: c.v})
			}
		}
	}
}

// measureRSS weighs the daemon idle and holding idle connections.
func (r *runner) measureRSS(ctx context.Context, p path) {
	if p.pid == 0 && p.pidFile == "" {
		return
	}
	if r.wantCase("daemon RSS idle") {
		r.idleRSS(ctx, p)
	}
	counts := []int{1000, 10000}
	if r.opts.Quick && p.pidFile != "" {
		counts = counts[:1] // a peer takes long to open 10 000
	}
	for _, conns := range counts {
		if r.wantCase(fmt.Sprintf("daemon RSS, %d idle conns", conns)) {
			r.holdConns(ctx, p, conns)
		}
	}
}

// wantCase says whether any of the cases is picked by Options.Cases.
func (r *runner) wantCase(cases ...string) bool {
	if r.opts.Cases == nil {
		return true
	}
	for _, c := range cases {
		if r.opts.Cases.MatchString(c) {
			return true
		}
	}
	return false
}

// wantPath says whether the path is picked by Options.Paths.
func (r *runner) wantPath(name string) bool {
	return r.opts.Paths == nil || r.opts.Paths.MatchString(name)
}

// settle is how long the memory figures wait with nothing happening
// before they weigh: idle means idle for a while, as a daemon that gives
// memory back once quiet would be.
func (r *runner) settle() time.Duration {
	if r.opts.Quick {
		return 500 * time.Millisecond
	}
	return 3 * time.Second
}

// idleRSS weighs the daemon (or the peer) with nothing to do.
func (r *runner) idleRSS(ctx context.Context, p path) {
	res := Result{Case: "daemon RSS idle", Path: p.name, Unit: "MiB"}
	if p.pidFile == "" {
		time.Sleep(r.settle())
		res.Value = rssMiB(p.pid)
		r.add(res)
		return
	}
	os.Remove(p.pidFile)
	argv := p.wrap("sleep", strconv.FormatFloat((r.settle()+time.Second).Seconds(), 'f', 1, 64))
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if err := c.Start(); err != nil {
		res.Err = err.Error()
		r.add(res)
		return
	}
	pid := p.daemonPID()
	time.Sleep(r.settle())
	res.Value = rssMiB(pid)
	if pid == 0 || res.Value == 0 {
		res.Err = "could not find the process"
	}
	_ = c.Wait()
	r.add(res)
}

// holdConns opens conns idle connections through p and weighs the
// daemon (or the peer) while they are held.
func (r *runner) holdConns(ctx context.Context, p path, conns int) {
	res := Result{Case: fmt.Sprintf("daemon RSS, %d idle conns", conns), Path: p.name, Unit: "MiB"}
	if p.pidFile != "" {
		os.Remove(p.pidFile)
	}
	hold := strconv.FormatFloat((r.settle() + time.Second).Seconds(), 'f', 1, 64)
	argv := p.wrap("python3", "-c", pyHold, p.server, strconv.Itoa(p.sinkPort), strconv.Itoa(conns), hold)
	hctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(hctx, argv[0], argv[1:]...)
	stdout, err := c.StdoutPipe()
	if err == nil {
		err = c.Start()
	}
	if err != nil {
		res.Err = err.Error()
		r.add(res)
		return
	}
	sc := bufio.NewScanner(stdout)
	held := ""
	if sc.Scan() {
		held = sc.Text()
	}
	time.Sleep(r.settle())
	res.Value = rssMiB(p.daemonPID())
	if held != fmt.Sprintf("held %d", conns) {
		res.Err = "could not hold the connections: " + held
	}
	r.add(res)
	// The holder lets go after a few seconds and exits, and the peer
	// with it.
	_, _ = io.Copy(io.Discard, stdout)
	_ = c.Wait()
	if r.opts.Quick {
		time.Sleep(300 * time.Millisecond)
	} else {
		time.Sleep(time.Second) // let the daemon drop them
	}
}

// pyRR measures request/response latency over one TCP connection and
// over UDP to the echo port, then connections per second to the sink
// port, one at a time and from 16 threads; it prints JSON. Given the
// daemon's PID or a file that holds it (argv[5]), it also weighs the CPU
// time the daemon's threads spent per exchange and per sequential
// connection (/proc/PID/task/*/schedstat, in nanoseconds).
const pyRR = `
import json, os, socket, sys, threading, time
host, echo, sink, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
who = sys.argv[5] if len(sys.argv) > 5 else ""
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
def pid():
    if who.isdigit():
        return int(who)
    try:
        return int(open(who).read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
def cpu():
    # the daemon's CPU time in µs, summed over its threads
    p = pid()
    if p == 0:
        return None
    t = 0
    try:
        tasks = os.listdir("/proc/%d/task" % p)
    except OSError:
        return None
    for k in tasks:
        try:
            t += int(open("/proc/%d/task/%s/schedstat" % (p, k)).read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended
    return t / 1e3
def per(c0, m):
    c1 = cpu()
    return -1 if c0 is None or c1 is None else (c1 - c0) / m
def rr(s):
    lat = []
    lost = 0
    c0 = None
    for i in range(n + 50):
        if i == 50:
            c0 = cpu()
        t = time.perf_counter()
        s.send(b"x")
        try:
            s.recv(64)
        except socket.timeout:
            lost += 1
            continue
        if i >= 50:
            lat.append((time.perf_counter() - t) * 1e6)
    cpu1 = per(c0, n)
    lat.sort()
    return sum(lat) / len(lat), lat[int(len(lat) * 0.99)], lost, cpu1
s = socket.create_connection((host, echo), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
tavg, tp99, _, tcpu = rr(s)
s.close()
u = socket.socket(fam, socket.SOCK_DGRAM)
u.settimeout(0.5)
u.connect((host, echo))
uavg, up99, ulost, ucpu = rr(u)
u.close()
def conns(m):
    for i in range(m):
        c = socket.create_connection((host, sink), timeout=10)
        c.close()
m = n // 2
c0 = cpu()
t = time.perf_counter()
conns(m)
seq = m / (time.perf_counter() - t)
ccpu = per(c0, m)
m = (n // 16) * 16
ts = [threading.Thread(target=conns, args=(m // 16,)) for i in range(16)]
t = time.perf_counter()
for th in ts: th.start()
for th in ts: th.join()
par = m / (time.perf_counter() - t)
print(json.dumps({"TCPAvg": tavg, "TCPP99": tp99, "UDPAvg": uavg, "UDPP99": up99, "UDPLost": ulost, "ConnSeq": seq, "ConnPar": par,
    "TCPCPU": tcpu, "UDPCPU": ucpu, "ConnCPU": ccpu}))
`

// pyHold opens argv[3] connections to argv[1]:argv[2] and holds them for
// argv[4] seconds.
const pyHold = `
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
keep = []
try:
    for i in range(n):
        keep.append(socket.create_connection((host, port), timeout=10))
    print("held %d" % len(keep), flush=True)
except OSError as e:
    print("failed after %d: %s" % (len(keep), e), flush=True)
time.sleep(float(sys.argv[4]))
`
