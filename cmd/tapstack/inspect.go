package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tapstack/tapstack/internal/control"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack/nshost"
)

// daemonControl is what a daemon's control socket serves: the gateway's
// forwards and counters, captures, and the ss and status reports.
type daemonControl struct {
	relay.ControlHandler
	s *session
}

// StartCapture starts a capture to a file.
func (d daemonControl) StartCapture(path string, snaplen int) error {
	return d.s.caps.StartFile(path, snaplen)
}

// StreamCapture streams a capture to w.
func (d daemonControl) StreamCapture(ctx context.Context, w io.Writer, snaplen int, started func()) error {
	return d.s.caps.Stream(ctx, w, snaplen, started)
}

// StopCaptures stops every capture started at run time.
func (d daemonControl) StopCaptures() (int, error) { return d.s.caps.Stop() }

// Captures names the captures running, --pcap's included.
func (d daemonControl) Captures() []string {
	l := d.s.caps.List()
	if d.s.pcapPath != "" {
		l = append([]string{d.s.pcapPath + " (--pcap)"}, l...)
	}
	return l
}

// Impair changes the wire's impairment (unless spec is empty) and
// describes it.
func (d daemonControl) Impair(spec string) (string, error) {
	h := d.s.host
	if spec != "" {
		sp, err := link.ParseImpairSpec(spec)
		if err != nil {
			return "", err
		}
		if err := h.SetImpairment(sp); err != nil {
			return "", err
		}
		d.s.log.Info("impairment set", "spec", sp.String())
	}
	return describeImpairment(h), nil
}

// describeImpairment says what impairs the host's wire and what it did.
func describeImpairment(h *nshost.Host) string {
	sp, seed, in, out, ok := h.Impairment()
	if !ok {
		return "this wire cannot be impaired"
	}
	line := func(dir string, st link.ImpairStats) string {
		return fmt.Sprintf("%s: %d frames, %d lost, %d overflowed, %d duplicated, %d corrupted, %d reordered, %d delayed",
			dir, st.Frames, st.Dropped, st.Overflowed, st.Duplicated, st.Corrupted, st.Reordered, st.Delayed)
	}
	return fmt.Sprintf("%v (seed %d)\n%s\n%s", sp, seed, line("in (to the stack)", in), line("out (to the namespace)", out))
}

// Report answers "ss" and "status".
func (d daemonControl) Report(op string) (any, bool, error) {
	switch op {
	case "ss":
		return d.ss(), true, nil
	case "status":
		return d.status(), true, nil
	}
	return nil, false, nil
}

// ssReport is tapstack ss's document.
type ssReport struct {
	Flows        []relay.FlowInfo    `json:"flows"`
	Forwards     []relay.ForwardInfo `json:"forwards"`
	PendingDials []relay.DialInfo    `json:"pending_dials"`
	SocketsInUse int                   `json:"sockets_in_use"`
	SocketLimit  int                   `json:"socket_limit"`
	// Sockets are the stack's sockets when asked for (tapstack ss -a).
	Sockets  []sockets.SocketInfo `json:"sockets,omitempty"`
	Refusals map[string]uint64    `json:"refusals"`
}

// refusalKeys are the Stats counters of flows and packets refused,
// dropped or failed, by cause.
var refusalKeys = []string{
	"refused", "dial_failures", "dropped_busy", "dials_evicted", "dns_dropped", "pings_dropped",
	"syns_dropped", "socket_table_full", "spoofed", "udp_errors", "rx_errors", "tx_errors",
}

func (d daemonControl) refusals() map[string]uint64 {
	st := d.Stats()
	m := make(map[string]uint64, len(refusalKeys))
	for _, k := range refusalKeys {
		m[k] = st[k]
	}
	return m
}

func (d daemonControl) ss() ssReport {
	tab := sockets.Table(d.s.host.Stack)
	return ssReport{
		Flows: d.G.FlowList(), Forwards: d.G.ForwardList(), PendingDials: d.G.PendingDials(),
		SocketsInUse: tab.InUse, SocketLimit: tab.Limit, Sockets: tab.Sockets, Refusals: d.refusals(),
	}
}

// statusReport is tapstack status's document.
type statusReport struct {
	Namespace    string            `json:"namespace"`
	PID          int               `json:"pid"`
	TAP          string            `json:"tap"`
	StackAddrs   []string          `json:"stack_addrs"`
	NSAddrs      []string          `json:"ns_addrs"`
	MTU          int               `json:"mtu"`
	Offload      bool              `json:"offload"`
	Uptime       time.Duration     `json:"uptime_ns"`
	Flows        int               `json:"flows"`
	Forwards     int               `json:"forwards"`
	BytesUp      uint64            `json:"bytes_up"`
	BytesDown    uint64            `json:"bytes_down"`
	RxFrames     uint64            `json:"rx_frames"`
	TxFrames     uint64            `json:"tx_frames"`
	SocketsInUse int               `json:"sockets_in_use"`
	SocketLimit  int               `json:"socket_limit"`
	Captures     []string          `json:"captures,omitempty"`
	Drops        map[string]uint64 `json:"drops"`
	RSSKiB       int               `json:"rss_kib"`
	Goroutines   int               `json:"goroutines"`
}

func (d daemonControl) status() statusReport {
	h := d.s.host
	tab := sockets.Table(h.Stack)
	ls := h.Link.Stats()
	up, down := d.G.Bytes()
	r := statusReport{
		Namespace: d.s.netns, PID: os.Getpid(), TAP: h.TAP, MTU: h.MTU, Offload: d.s.offload,
		Uptime: time.Since(d.s.started).Round(time.Millisecond), Flows: d.G.FlowCount(), Forwards: len(d.G.Forwards()),
		BytesUp: up, BytesDown: down, RxFrames: ls.RxFrames, TxFrames: ls.TxFrames,
		SocketsInUse: tab.InUse, SocketLimit: tab.Limit, Captures: d.Captures(), Drops: d.refusals(),
		RSSKiB: rssKiB(), Goroutines: runtime.NumGoroutine(),
	}
	r.Drops["stack_dropped_packets"] = h.Stack.Stats().Protocols.DroppedPackets
	for _, p := range h.StackAddrs {
		r.StackAddrs = append(r.StackAddrs, p.String())
	}
	for _, p := range h.NSAddrs {
		r.NSAddrs = append(r.NSAddrs, p.String())
	}
	return r
}

// rssKiB is this process's resident set, from /proc.
func rssKiB() int {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			var n int
			fmt.Sscan(f[1], &n)
			return n
		}
	}
	return 0
}

// controlFlags are the flags that find a daemon's control socket.
type controlFlags struct {
	netns, path string
}

func (c *controlFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.netns, "netns", "tapstack", "the daemon serving namespace `NAME`")
	fs.StringVar(&c.path, "control", "", "the daemon's control socket `PATH` (default "+control.Dir+"/NETNS.sock)")
}

func (c *controlFlags) socket() string {
	if c.path != "" {
		return c.path
	}
	return control.PathFor(c.netns)
}

func runCapture(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("capture", "FILE | - | --stop", stderr)
	var cf controlFlags
	cf.register(fs)
	stop := fs.Bool("stop", false, "stop the daemon's captures (those of --pcap go on)")
	snaplen := fs.Int("snaplen", 0, "keep at most this many `BYTES` of each frame (0: whole frames)")
	if err := parse(fs, args); err != nil {
		return err
	}
	a := fs.Args()
	switch {
	case *stop && len(a) == 0:
		resp, err := control.Call(cf.socket(), control.Request{Op: "capture-stop"})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "stopped %d captures\n", resp.Stopped)
		return nil
	case len(a) == 0:
		resp, err := control.Call(cf.socket(), control.Request{Op: "captures"})
		if err != nil {
			return err
		}
		for _, c := range resp.Captures {
			fmt.Fprintln(stdout, c)
		}
		return nil
	case len(a) == 1 && a[0] == "-" && !*stop:
		ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGPIPE)
		defer cancel()
		err := control.Stream(ctx, cf.socket(), control.Request{Op: "capture", File: "-", Snaplen: *snaplen}, stdout)
		if errors.Is(err, syscall.EPIPE) {
			return nil // the reader went away
		}
		return err
	case len(a) == 1 && !*stop:
		p, err := filepath.Abs(a[0])
		if err != nil {
			return err
		}
		resp, err := control.Call(cf.socket(), control.Request{Op: "capture", File: p, Snaplen: *snaplen})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "capturing to %s (running: %s); stop with tapstack capture --stop\n", p, strings.Join(resp.Captures, ", "))
		return nil
	}
	fmt.Fprintln(stderr, "tapstack capture: want FILE, - (a pcap stream on stdout), --stop, or nothing (list the captures)")
	return errUsage
}

// report asks the daemon for op's report.
func report(path, op string, v any) error {
	resp, err := control.Call(path, control.Request{Op: op})
	if err != nil {
		return err
	}
	if len(resp.Report) == 0 {
		return fmt.Errorf("the daemon at %s does not know %q (an older version?)", path, op)
	}
	return json.Unmarshal(resp.Report, v)
}

// watchLoop runs show once, or every second until SIGINT with watch.
func watchLoop(watch, clear bool, stdout io.Writer, show func() error) error {
	if !watch {
		return show()
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if clear {
			fmt.Fprint(stdout, "\033[H\033[2J")
		}
		if err := show(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func runSS(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ss", "", stderr)
	var cf controlFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON (one document per refresh with -w)")
	watch := fs.Bool("w", false, "refresh once a second until interrupted")
	all := fs.Bool("a", false, "list the stack's sockets too")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "tapstack ss: takes no arguments")
		return errUsage
	}
	return watchLoop(*watch, !*asJSON, stdout, func() error {
		var r ssReport
		if err := report(cf.socket(), "ss", &r); err != nil {
			return err
		}
		if !*all {
			r.Sockets = nil
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(r)
		}
		printSS(stdout, r)
		return nil
	})
}

func printSS(w io.Writer, r ssReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Proto\tKind\tNamespace\tPeer\tHost side\tState\tBytes up\tBytes down\tAge\tIdle\n")
	for _, f := range r.Flows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", f.Proto, f.Kind, f.NS, f.Dst, f.Local, f.State, f.Up, f.Down,
			f.Age.Round(100*time.Millisecond), f.Idle.Round(100*time.Millisecond))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d flows\n", len(r.Flows))
	if len(r.Forwards) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "Forward\tConnections\tBytes up\tBytes down\n")
		for _, f := range r.Forwards {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", f.Spec, f.Conns, f.Up, f.Down)
		}
		tw.Flush()
	}
	if len(r.PendingDials) > 0 {
		fmt.Fprintf(w, "\n%d pending dials:", len(r.PendingDials))
		for _, d := range r.PendingDials {
			fmt.Fprintf(w, " %s (%s)", d.Dst, d.Age.Round(100*time.Millisecond))
		}
		fmt.Fprintln(w)
	}
	if len(r.Sockets) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "FD\tFamily\tType\tLocal\tPeer\tState\tAge\tMade at\n")
		for _, s := range r.Sockets {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.FD, s.Family, s.Type, s.Local, s.Peer, s.State, s.Age.Round(100*time.Millisecond), s.Site)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\nsockets: %d in use of %d\n", r.SocketsInUse, r.SocketLimit)
	fmt.Fprintf(w, "refused and dropped: %s\n", counters(r.Refusals))
}

// counters prints a counter map sorted by name.
func counters(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, m[k])
	}
	return b.String()
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", "", stderr)
	var cf controlFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "tapstack status: takes no arguments")
		return errUsage
	}
	var r statusReport
	if err := report(cf.socket(), "status", &r); err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	offload := "off"
	if r.Offload {
		offload = "on (TSO, checksums)"
	}
	caps := "none"
	if len(r.Captures) > 0 {
		caps = strings.Join(r.Captures, ", ")
	}
	fmt.Fprintf(stdout, "namespace   %s (daemon pid %d, up %s)\n", r.Namespace, r.PID, r.Uptime.Round(time.Second))
	fmt.Fprintf(stdout, "tap         %s, MTU %d, offload %s\n", r.TAP, r.MTU, offload)
	fmt.Fprintf(stdout, "stack       %s\n", strings.Join(r.StackAddrs, " "))
	fmt.Fprintf(stdout, "namespace   %s\n", strings.Join(r.NSAddrs, " "))
	fmt.Fprintf(stdout, "flows       %d relayed now, %d port forwards\n", r.Flows, r.Forwards)
	fmt.Fprintf(stdout, "bytes       %d up (namespace → host), %d down\n", r.BytesUp, r.BytesDown)
	fmt.Fprintf(stdout, "frames      %d in, %d out\n", r.RxFrames, r.TxFrames)
	fmt.Fprintf(stdout, "sockets     %d in use of %d\n", r.SocketsInUse, r.SocketLimit)
	fmt.Fprintf(stdout, "captures    %s\n", caps)
	fmt.Fprintf(stdout, "drops       %s\n", counters(r.Drops))
	fmt.Fprintf(stdout, "memory      RSS %.1f MiB, %d goroutines\n", float64(r.RSSKiB)/1024, r.Goroutines)
	return nil
}

func runImpair(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("impair", "[SPEC | off]", stderr)
	var cf controlFlags
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	spec := ""
	switch fs.NArg() {
	case 0:
	case 1:
		spec = fs.Arg(0)
		if _, err := link.ParseImpairSpec(spec); err != nil {
			return err
		}
	default:
		fmt.Fprintln(stderr, "tapstack impair: want one SPEC (keys joined by commas), off, or nothing to show the impairment")
		return errUsage
	}
	resp, err := control.Call(cf.socket(), control.Request{Op: "impair", Spec: spec})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, resp.Impair)
	return nil
}
