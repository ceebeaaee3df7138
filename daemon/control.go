package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/tapstack/tapstack/internal/control"
	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/sockets"
)

// hostCounters are the counters of the daemon's link beside the relay's:
// with relay.Counters and relay.ProcessCounters, the one table behind
// both the control socket's "stats" and the metrics.
func (d *Daemon) hostCounters() []relay.Counter {
	l := d.host.Link
	stat := func(f func(link.Stats) uint64) func() uint64 { return func() uint64 { return f(l.Stats()) } }
	return []relay.Counter{
		// Package metrics exports the frame counters as
		// tapstack_link_*; the table only names them.
		{Name: "rx_frames", Value: stat(func(s link.Stats) uint64 { return s.RxFrames })},
		{Name: "tx_frames", Value: stat(func(s link.Stats) uint64 { return s.TxFrames })},
		{Name: "rx_errors", Value: stat(func(s link.Stats) uint64 { return s.RxErrors })},
		{Name: "tx_errors", Value: stat(func(s link.Stats) uint64 { return s.TxErrors })},
		relay.Refusal("spoofed", stat(func(s link.Stats) uint64 { return s.RxFiltered })),
	}
}

// handler is what the daemon's control socket serves: the relay's
// forwards and counters, captures, impairment, and the ss and status
// reports.
func (d *Daemon) handler() control.Handler {
	return daemonControl{ControlHandler: relay.ControlHandler{G: d.gw, Extra: d.hostCounters()}, d: d}
}

type daemonControl struct {
	relay.ControlHandler
	d *Daemon
}

// StartCapture starts a capture to a file.
func (c daemonControl) StartCapture(path string, snaplen int) error {
	return c.d.caps.StartFile(path, snaplen)
}

// StreamCapture streams a capture to w.
func (c daemonControl) StreamCapture(ctx context.Context, w io.Writer, snaplen int, started func()) error {
	return c.d.caps.Stream(ctx, w, snaplen, started)
}

// StopCaptures stops every capture started at run time.
func (c daemonControl) StopCaptures() (int, error) { return c.d.caps.Stop() }

// Captures names the captures running, Config.Pcap's included.
func (c daemonControl) Captures() []string {
	l := c.d.caps.List()
	if c.d.cfg.Pcap != "" {
		l = append([]string{c.d.cfg.Pcap + " (--pcap)"}, l...)
	}
	return l
}

// Impair changes the wire's impairment (unless spec is empty) and
// describes it.
func (c daemonControl) Impair(spec string) (string, error) {
	h := c.d.host
	if spec != "" {
		sp, err := link.ParseImpairSpec(spec)
		if err != nil {
			return "", err
		}
		if err := h.SetImpairment(sp); err != nil {
			return "", err
		}
		c.d.log.Info("impairment set", "spec", sp.String())
	}
	return c.d.DescribeImpairment(), nil
}

// DescribeImpairment says what impairs the wire and what it did.
func (d *Daemon) DescribeImpairment() string {
	sp, seed, in, out, ok := d.host.Impairment()
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
func (c daemonControl) Report(op string) (any, bool, error) {
	switch op {
	case "ss":
		return c.d.SS(), true, nil
	case "status":
		return c.d.Status(), true, nil
	}
	return nil, false, nil
}

// refusals are the counters of flows and packets refused, dropped or
// failed, by cause: the table's relay_refusals_total rows and the
// link's errors.
func (d *Daemon) refusals() map[string]uint64 {
	m := map[string]uint64{}
	for _, c := range append(d.gw.Counters(), d.hostCounters()...) {
		if c.Metric == "relay_refusals_total" || c.Name == "rx_errors" || c.Name == "tx_errors" {
			m[c.Name] = c.Value()
		}
	}
	return m
}

// SS is the "ss" report: flows, forwards, pending dials, sockets.
func (d *Daemon) SS() control.SSReport {
	tab := sockets.Table(d.host.Stack)
	return control.SSReport{
		Flows: d.gw.FlowList(), Forwards: d.gw.ForwardList(), PendingDials: d.gw.PendingDials(),
		SocketsInUse: tab.InUse, SocketLimit: tab.Limit, Sockets: tab.Sockets, Refusals: d.refusals(),
	}
}

// Status is the "status" report: one screen about the daemon.
func (d *Daemon) Status() control.StatusReport {
	h := d.host
	tab := sockets.Table(h.Stack)
	ls := h.Link.Stats()
	up, down := d.gw.Bytes()
	r := control.StatusReport{
		Namespace: d.cfg.Name, PID: os.Getpid(), TAP: h.TAP, MTU: h.MTU, Offload: !d.cfg.NoOffload, Engine: d.cfg.Relay.Engine,
		Uptime: time.Since(d.started).Round(time.Millisecond), Flows: d.gw.FlowCount(), Forwards: len(d.gw.Forwards()),
		BytesUp: up, BytesDown: down, RxFrames: ls.RxFrames, TxFrames: ls.TxFrames,
		SocketsInUse: tab.InUse, SocketLimit: tab.Limit, Drops: d.refusals(),
		RSSKiB: rssKiB(), Goroutines: runtime.NumGoroutine(), TAPReader: "link's goroutines",
	}
	if ls.Polled {
		r.TAPReader = "flow engine's loop"
	}
	r.Captures = daemonControl{d: d}.Captures()
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
