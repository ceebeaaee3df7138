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
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tapstack/tapstack/internal/control"
	"github.com/tapstack/tapstack/link"
)

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
	info := fs.Bool("i", false, "show the flow engine's state of each connection it relays")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "tapstack ss: takes no arguments")
		return errUsage
	}
	return watchLoop(*watch, !*asJSON, stdout, func() error {
		var r control.SSReport
		if err := report(cf.socket(), "ss", &r); err != nil {
			return err
		}
		if !*all {
			r.Sockets = nil
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(r)
		}
		if !*info {
			for i := range r.Flows {
				r.Flows[i].Engine = ""
			}
		}
		printSS(stdout, r)
		return nil
	})
}

func printSS(w io.Writer, r control.SSReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Proto\tKind\tNamespace\tPeer\tHost side\tState\tBytes up\tBytes down\tAge\tIdle\n")
	for _, f := range r.Flows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", f.Proto, f.Kind, f.NS, f.Dst, f.Local, f.State, f.Up, f.Down,
			f.Age.Round(100*time.Millisecond), f.Idle.Round(100*time.Millisecond))
		if f.Engine != "" {
			fmt.Fprintf(tw, "\t%s\n", f.Engine)
		}
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
	var r control.StatusReport
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
	fmt.Fprintf(stdout, "tap         %s, MTU %d, offload %s, read by the %s\n", r.TAP, r.MTU, offload, r.TAPReader)
	fmt.Fprintf(stdout, "stack       %s\n", strings.Join(r.StackAddrs, " "))
	fmt.Fprintf(stdout, "namespace   %s\n", strings.Join(r.NSAddrs, " "))
	fmt.Fprintf(stdout, "flows       %d relayed now (%s engine), %d port forwards\n", r.Flows, r.Engine, r.Forwards)
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
