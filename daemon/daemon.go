// Package daemon assembles a tapstack daemon: a host in a network
// namespace (a TAP and a stack: package nshost) with the relay that gives
// the namespace its network (package relay), the built-in services, a
// control socket, Prometheus metrics, packet captures, impairment of the
// wire, and the drain that lets relayed connections deliver what the
// namespace sent before the end. It is what `tapstack up`, `tapstack
// run`, `tapstack slirp4netns` and `tapstack pasta` start; a Go program
// embeds it the same way:
//
//	d, err := daemon.Start(ctx, daemon.Config{Netns: "demo"})
//	if err != nil { ... }
//	defer d.Close()
//	err = d.Wait(ctx) // until ctx ends (then drains) or the namespace goes
//
// It knows nothing of flags, signals or how the process was started.
// Start at Config and Start.
package daemon

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapstack/tapstack/internal/capture"
	"github.com/tapstack/tapstack/internal/control"
	"github.com/tapstack/tapstack/internal/services"
	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/stack"
	"github.com/tapstack/tapstack/stack/netns"
	"github.com/tapstack/tapstack/stack/nshost"
)

// Defaults of a daemon, beside the relay's (relay.Default…) and the
// address plan's (nshost.DefaultPlan).
const (
	// DefaultNetns is the namespace of a Config that names none.
	DefaultNetns = "tapstack"
	// DefaultMTU is the TAP's MTU: as pasta's, 65520, which the relay
	// benchmark shows pays three to six times over 1500. The library's
	// own default stays link.DefaultMTU.
	DefaultMTU = link.MaxMTU
	// DefaultTxQueues is the number of goroutines writing to the TAP.
	DefaultTxQueues = 1
	// DefaultDrainTimeout bounds Wait's drain: long enough for a
	// command's last megabytes to leave the namespace's socket buffers,
	// short enough that a connection left open by a stray process does
	// not hold the exit for long.
	DefaultDrainTimeout = 5 * time.Second
	// DefaultReadyTimeout bounds the wait for the namespace to reach the
	// stack.
	DefaultReadyTimeout = 10 * time.Second
	// socketsPerDaemon are the socket table's slots beyond one per flow.
	socketsPerDaemon = 64
)

// Config describes a daemon. The zero value of each field is its
// default; the zero Config is `tapstack up` with no flags but --serve
// none (up runs the echo and discard services unless told otherwise).
type Config struct {
	// Name names the daemon in its log lines, its metrics' netns label
	// and its control socket's default path ("": the namespace's name,
	// pid-PID or path-… after what names the namespace).
	Name string

	// The namespace is one of: Netns, a named one (created when missing,
	// and then deleted by Close); PID, a process's; NetnsPath, a file's
	// (/proc/PID/ns/net or a bind mount of one); or the namespace that
	// Devices were opened in (TAP queues handed over by a helper, see
	// the rootless modes). None of them: DefaultNetns.
	Netns     string
	PID       int
	NetnsPath string
	Devices   []link.Device
	// QuitWithNetnsPath ends the daemon when the file of NetnsPath is
	// removed or unmounted, as pasta does (slirp4netns runs on).
	QuitWithNetnsPath bool
	// NoConfigure leaves the kernel side as the TAP comes (slirp4netns
	// without -c); MAC is the kernel side's MAC (nil: the kernel's).
	NoConfigure bool
	MAC         net.HardwareAddr

	// TAP is the interface's name in the namespace (nshost.DefaultTAP).
	TAP string
	// MTU is the TAP's MTU (DefaultMTU).
	MTU int
	// NoOffload opens a plain TAP, without virtio_net_hdr offloads.
	NoOffload bool
	// TxQueues is the number of transmit queues writing to the TAP
	// (DefaultTxQueues; negative: none, the sender writes).
	TxQueues int
	// Plan is the address plan (nshost.DefaultPlan when Plan.Stack is
	// empty). Plan.DNS empty with Plan.Stack set: no DNS forwarder.
	Plan nshost.Plan
	// MaxSockets is the socket table's capacity (one per relayed flow
	// and 64 more, at least stack.DefaultMaxSockets).
	MaxSockets int
	// SocketSites records where each socket was made (tapstack ss -a).
	SocketSites bool

	// Relay configures the relay. The daemon fills in its
	// LoopbackAddrs, DNSAddrs, NSAddrs, NSPrefixes, Gateway4, MTU,
	// AddGuest and Log from the plan and the host, and sets NoSLAAC
	// unless NoConfigure.
	Relay relay.Config
	// AutoForwardTCP and AutoForwardUDP keep forwards of the host's ports
	// in step with the ports the namespace listens on, checked every
	// AutoForwardPeriod (pasta's -t auto, -u auto; see
	// relay.SyncAutoForwards).
	AutoForwardTCP, AutoForwardUDP bool
	// AutoForwardSkipTCP and AutoForwardSkipUDP are ports the automatic
	// forwards leave out (pasta's -t ~PORT).
	AutoForwardSkipTCP, AutoForwardSkipUDP []uint16
	// NSForwards carry what the namespace sends to its loopback's ports
	// on to the host's loopback (pasta's -T, -U); AutoNSForwardTCP and
	// AutoNSForwardUDP do so for every port the host listens on (but
	// those forwarded into the namespace). They need a namespace the
	// daemon can enter (not one handed over in Devices).
	NSForwards                         []NSForward
	AutoNSForwardTCP, AutoNSForwardUDP bool
	// Services are built-in services to run at the stack's addresses
	// (services: echo, discard, iperf3).
	Services []string

	// Control is the control socket's path (control.PathFor(Name)).
	Control string
	// Metrics, if set, is the address where Prometheus metrics are
	// served, on /metrics.
	Metrics string
	// Pcap, if set, is a file that every frame on the TAP is written to;
	// PcapOptions tune it.
	Pcap        string
	PcapOptions link.PcapOptions
	// Impair impairs the wire from the start (it can be changed later
	// through the control socket); ImpairSeed seeds its decisions (0: a
	// random seed, logged so that a run can be replayed).
	Impair     link.ImpairSpec
	ImpairSeed int64
	// DrainTimeout bounds the drain of Wait (DefaultDrainTimeout;
	// negative: no drain).
	DrainTimeout time.Duration
	// ReadyTimeout bounds the wait for the namespace to reach the stack
	// (DefaultReadyTimeout).
	ReadyTimeout time.Duration
	// Log receives the daemon's lines (nil: none).
	Log *slog.Logger
}

// fill sets the defaults of cfg's zero fields.
func (c *Config) fill() error {
	if c.Netns == "" && c.PID == 0 && c.NetnsPath == "" && c.Devices == nil {
		c.Netns = DefaultNetns
	}
	if c.PID < 0 {
		return fmt.Errorf("PID %d: not a process ID", c.PID)
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.TxQueues == 0 {
		c.TxQueues = DefaultTxQueues
	} else if c.TxQueues < 0 {
		c.TxQueues = 0
	}
	if len(c.Plan.Stack) == 0 {
		c.Plan = nshost.DefaultPlan()
	}
	if c.Relay.MaxFlows == 0 {
		c.Relay.MaxFlows = relay.DefaultMaxFlows
	}
	switch c.Relay.Engine {
	case "":
		c.Relay.Engine = relay.DefaultEngine()
	case relay.EngineStack, relay.EngineFlow:
	default:
		return fmt.Errorf("relay engine %q: want %q or %q", c.Relay.Engine, relay.EngineStack, relay.EngineFlow)
	}
	if c.MaxSockets == 0 {
		c.MaxSockets = max(stack.DefaultMaxSockets, c.Relay.MaxFlows+socketsPerDaemon)
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.ImpairSeed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:])
		c.ImpairSeed = int64(binary.LittleEndian.Uint64(b[:])&^(1<<63) | 1)
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Name == "" {
		switch {
		case c.PID != 0:
			c.Name = fmt.Sprintf("pid-%d", c.PID)
		case c.NetnsPath != "":
			c.Name = "path-" + strings.ReplaceAll(strings.Trim(c.NetnsPath, "/"), "/", "-")
		default:
			c.Name = c.Netns
		}
	}
	for _, n := range c.Services {
		if _, ok := services.Port(n); !ok {
			return fmt.Errorf("unknown service %q (known: %s)", n, strings.Join(services.Names(), ", "))
		}
	}
	return nil
}

// ErrProcessExited is the end of a daemon whose namespace is a process's
// (Config.PID): that process exited. It is the normal end of such a
// daemon, as of slirp4netns.
var ErrProcessExited = errors.New("the namespace's process exited")

// Daemon is a running daemon. Its methods are safe for concurrent use.
type Daemon struct {
	cfg     Config
	host    *nshost.Host
	gw      *relay.Gateway
	ctl     *control.Server
	srv     *services.Server
	caps    *capture.Set // captures started through the control socket
	pcap    *link.Pcap   // Config.Pcap, closed after the host
	metrics *metricsServer
	trim    *memoryTrimmer
	log     *slog.Logger
	started time.Time
	resolv  string // the resolv.conf this daemon wrote, removed by Close
	// stopSpoofLog stops the goroutine that reports spoofed frames.
	stopSpoofLog func()
	// stopAuto stops the goroutine of the automatic forwards.
	stopAuto func()
	// nsfwd are the forwards from the namespace (Config.NSForwards).
	nsfwd *nsForwards

	done      chan struct{} // closed when the daemon ends by itself
	err       error         // why; set before done is closed
	stopWatch context.CancelFunc
	watching  sync.WaitGroup
	closeOnce sync.Once
}

// Start builds the host in the namespace, starts the relay and the rest
// that cfg asks for, and returns once the namespace reaches the stack.
// ctx bounds the start only. On error it undoes what it did.
func Start(ctx context.Context, cfg Config) (*Daemon, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	log := cfg.Log.With("netns", cfg.Name)
	d := &Daemon{cfg: cfg, log: log, started: time.Now(), done: make(chan struct{})}
	if err := d.start(ctx); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Daemon) start(ctx context.Context) error {
	cfg := &d.cfg
	logf := func(format string, args ...any) { d.log.Info(fmt.Sprintf(format, args...)) }
	rc := cfg.Relay
	rc.DNSAddrs = nshost.Addrs(cfg.Plan.DNS)
	rc.NSAddrs = nshost.Addrs(cfg.Plan.NS)
	gw4, gw6 := cfg.Plan.Gateways()
	rc.LoopbackAddrs = nil
	if gw4.IsValid() {
		rc.LoopbackAddrs = append(rc.LoopbackAddrs, gw4)
	}
	if gw6.IsValid() {
		rc.LoopbackAddrs = append(rc.LoopbackAddrs, gw6)
	}
	rc.Log = d.log
	// The DHCP server and the router advertisements configure a
	// namespace nobody configured; one with its addresses set gets no
	// second address by SLAAC.
	rc.NSPrefixes = cfg.Plan.NS
	rc.Gateway4 = gw4
	rc.MTU = cfg.MTU
	if !cfg.NoConfigure {
		rc.NoSLAAC = true
	}
	// Forwards to other addresses of the namespace, addresses leased by
	// DHCP and those the namespace makes by SLAAC are checked and let
	// through the source filter by the host, once it exists. The DHCP
	// server and the RAs call it from the packet path, which may run
	// before New returns: they find the host through up.
	var up atomic.Pointer[nshost.Host]
	rc.AddGuest = func(a netip.Addr) error {
		h := up.Load()
		if h == nil {
			return errors.New("the host is not up yet")
		}
		return h.AddGuest(a)
	}
	d.gw = relay.New(rc)
	hc := nshost.Config{
		Netns: cfg.Netns, PID: cfg.PID, NetnsPath: cfg.NetnsPath, NoConfigure: cfg.NoConfigure, MAC: cfg.MAC,
		TAP: cfg.TAP, MTU: cfg.MTU, Offload: !cfg.NoOffload, TxQueues: cfg.TxQueues,
		StackAddrs: cfg.Plan.Stack, NSAddrs: cfg.Plan.NS, ExtraStackAddrs: cfg.Plan.DNS,
		MaxSockets: cfg.MaxSockets, SocketSites: cfg.SocketSites,
		Gateway: true, Init: d.gw.Install, Logf: logf, FilterSources: true,
		Impair: cfg.Impair, ImpairSeed: cfg.ImpairSeed, Impairable: true,
	}
	if cfg.Devices == nil && cfg.PID == 0 && cfg.NetnsPath == "" {
		d.writeResolvConf()
	}
	if cfg.Pcap != "" {
		p, err := link.CreatePcap(cfg.Pcap, cfg.PcapOptions)
		if err != nil {
			return fmt.Errorf("pcap %s: %w", cfg.Pcap, err)
		}
		d.pcap = p
		hc.Observer = p
	}
	var err error
	if cfg.Devices != nil {
		d.host, err = nshost.NewOnDevices(hc, cfg.Devices)
	} else {
		d.host, err = nshost.New(hc)
	}
	if err != nil {
		return err
	}
	h := d.host
	up.Store(h)
	if !cfg.Impair.IsZero() {
		d.log.Info(fmt.Sprintf("impairing the wire: %v (seed %d; replay with --impair-seed %d)", cfg.Impair, cfg.ImpairSeed, cfg.ImpairSeed))
	}
	d.caps = capture.New(h.Link)
	if err := d.gw.Start(); err != nil {
		return err
	}
	if cfg.Relay.Engine == relay.EngineFlow {
		divert, err := d.gw.StartEngine(h.Link, [6]byte([]byte(h.Link.LinkAddress())), int(h.MTU), !h.Link.Offload())
		if err != nil {
			return err
		}
		h.Link.SetDivert(divert)
		// While it relays flows, the engine's loop reads the TAP itself
		// where it can (not while inbound frames are impaired).
		poll := func() (relay.LinkReads, error) {
			r, err := h.Link.Poll()
			if err != nil {
				return nil, err
			}
			return r, nil
		}
		if err := d.gw.ReadLink(poll); err != nil {
			return err
		}
	}
	if len(cfg.Services) > 0 {
		if d.srv, err = services.Start(h.Stack, cfg.Services...); err != nil {
			return err
		}
	}
	ctlPath := cfg.Control
	if ctlPath == "" {
		ctlPath = control.PathFor(cfg.Name)
		if len(ctlPath) > 100 { // a unix socket path holds 107 bytes
			sum := sha256.Sum256([]byte(cfg.Name))
			ctlPath = control.PathFor("ns-" + hex.EncodeToString(sum[:8]))
		}
	}
	if d.ctl, err = control.Listen(ctlPath, d.handler(), logf); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if cfg.Metrics != "" {
		if d.metrics, err = startMetrics(cfg.Metrics, cfg.Name, h, d.gw, d.hostCounters(), d.log); err != nil {
			return err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	err = h.WaitReady(rctx)
	cancel()
	if err != nil {
		return err
	}
	d.trim = startTrimmer(trimPeriod, trimThreshold, func() uint64 {
		ls := h.Link.Stats()
		return ls.RxFrames + ls.TxFrames
	})
	d.stopSpoofLog = logSpoofed(h.Link, spoofLogPeriod, logf)
	if len(cfg.NSForwards) > 0 || cfg.AutoNSForwardTCP || cfg.AutoNSForwardUDP {
		if h.NS == nil {
			return errors.New("forwards from the namespace to the host (pasta's -T, -U) need a namespace the daemon can enter (root, or root of its user namespace)")
		}
		d.nsfwd = &nsForwards{ns: h.NS, active: map[NSForward][]io.Closer{}, conns: map[io.Closer]bool{}}
		for _, f := range cfg.NSForwards {
			if err := d.nsfwd.add(f); err != nil {
				return err
			}
		}
	}
	if cfg.AutoForwardTCP || cfg.AutoForwardUDP || cfg.AutoNSForwardTCP || cfg.AutoNSForwardUDP {
		if err := d.startAutoForwards(); err != nil {
			return err
		}
	}
	d.watch()
	return nil
}

// AutoForwardPeriod is how often the automatic forwards look at the
// namespace's listening ports (pasta looks every second).
const AutoForwardPeriod = time.Second

// startAutoForwards starts the goroutine that keeps the automatic
// forwards in step (Config.AutoForwardTCP, AutoForwardUDP).
func (d *Daemon) startAutoForwards() error {
	read := func() (netns.Listening, error) { return d.host.NS.Listening() }
	switch {
	case !d.cfg.AutoForwardTCP && !d.cfg.AutoForwardUDP:
	case d.host.NS != nil:
	case d.cfg.PID != 0:
		dir := fmt.Sprintf("/proc/%d/net", d.cfg.PID)
		read = func() (netns.Listening, error) { return netns.ReadListening(dir, false) }
	default:
		return errors.New("automatic port forwards need the namespace's process (a PID) or a namespace the daemon can enter")
	}
	autoNS := map[NSForward]bool{}
	syncNS := func() {
		host, err := netns.ReadListening("/proc/self/net", true)
		if err != nil {
			return
		}
		skip := map[string]map[uint16]bool{"tcp": {}, "udp": {}}
		for _, f := range d.gw.Forwards() {
			skip[f.Proto][f.Host.Port()] = true
		}
		for _, p := range []struct {
			on     bool
			proto  string
			v4, v6 map[uint16]bool
		}{{d.cfg.AutoNSForwardTCP, "tcp", host.TCP4, host.TCP6}, {d.cfg.AutoNSForwardUDP, "udp", host.UDP4, host.UDP6}} {
			if !p.on {
				continue
			}
			ports := map[uint16]bool{}
			for q := range p.v4 {
				ports[q] = true
			}
			for q := range p.v6 {
				ports[q] = true
			}
			if err := d.nsfwd.sync(p.proto, ports, skip[p.proto], autoNS); err != nil {
				d.log.Warn(err.Error())
			}
		}
	}
	sync := func() {
		// Into the namespace first: its ports are then left out of the
		// other way.
		if d.cfg.AutoNSForwardTCP || d.cfg.AutoNSForwardUDP {
			defer syncNS()
		}
		if !d.cfg.AutoForwardTCP && !d.cfg.AutoForwardUDP {
			return
		}
		l, err := read()
		if err != nil {
			d.log.Debug("automatic forwards: cannot read the namespace's ports", "err", err)
			return // the namespace is going away
		}
		for _, p := range []struct {
			on     bool
			proto  string
			v4, v6 map[uint16]bool
			skip   []uint16
		}{{d.cfg.AutoForwardTCP, "tcp", l.TCP4, l.TCP6, d.cfg.AutoForwardSkipTCP}, {d.cfg.AutoForwardUDP, "udp", l.UDP4, l.UDP6, d.cfg.AutoForwardSkipUDP}} {
			if !p.on {
				continue
			}
			for _, q := range p.skip {
				delete(p.v4, q)
				delete(p.v6, q)
			}
			if err := d.gw.SyncAutoForwards(p.proto, p.v4, p.v6); err != nil {
				d.log.Warn(err.Error())
			}
		}
	}
	sync() // the ports listened on already are forwarded before Start returns
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(AutoForwardPeriod)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sync()
			}
		}
	}()
	d.stopAuto = func() {
		close(stop)
		<-done
	}
	return nil
}

// writeResolvConf gives a named namespace its resolver, as ip netns exec
// shows it, unless it has one.
func (d *Daemon) writeResolvConf() {
	rcText := d.cfg.Plan.ResolvConf()
	if rcText == "" {
		return
	}
	dir := filepath.Join("/etc/netns", d.cfg.Netns)
	rc := filepath.Join(dir, "resolv.conf")
	if _, err := os.Stat(rc); !errors.Is(err, os.ErrNotExist) {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	if err := os.WriteFile(rc, []byte(rcText), 0o644); err == nil {
		d.resolv = rc
	}
}

// watch ends the daemon by itself (Done) when its namespace goes away:
// a named one deleted, a process's exited, or the TAP gone.
func (d *Daemon) watch() {
	ctx, cancel := context.WithCancel(context.Background())
	d.stopWatch = cancel
	var gone <-chan string
	switch {
	case d.cfg.PID != 0:
		gone = watchGone(ctx, "", d.cfg.PID)
	case d.cfg.Netns != "" && d.cfg.Devices == nil:
		gone = watchGone(ctx, d.cfg.Netns, 0)
	case d.cfg.NetnsPath != "" && d.cfg.QuitWithNetnsPath:
		gone = watchFile(ctx, d.cfg.NetnsPath, fmt.Sprintf("namespace %s was removed", d.cfg.NetnsPath))
	}
	d.watching.Add(1)
	go func() {
		defer d.watching.Done()
		select {
		case <-ctx.Done():
			return
		case why := <-gone:
			if d.cfg.PID != 0 {
				d.err = fmt.Errorf("%s: %w", why, ErrProcessExited)
			} else {
				d.err = errors.New(why)
			}
		case <-d.host.Link.Failed():
			d.err = fmt.Errorf("the TAP %s is gone (%v)", d.host.TAP, d.host.Link.Err())
		}
		close(d.done)
	}()
}

// Done is closed when the daemon ends by itself: its namespace was
// deleted (a named one, or with QuitWithNetnsPath the file of NetnsPath
// removed or unmounted), its process exited, or its TAP is gone. Err
// says which.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Err is why Done was closed (nil before).
func (d *Daemon) Err() error {
	select {
	case <-d.done:
		return d.err
	default:
		return nil
	}
}

// Wait returns when ctx ends, after a drain of at most DrainTimeout
// (nil), or when the daemon ends by itself (Err, or nil for
// ErrProcessExited, the normal end of a PID daemon).
func (d *Daemon) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		d.log.Info("stopping")
		d.Drain()
		return nil
	case <-d.done:
		if errors.Is(d.err, ErrProcessExited) {
			d.log.Info(d.err.Error() + "; stopping")
			return nil
		}
		return fmt.Errorf("%w; stopping", d.err)
	}
}

// Drain stops relaying new flows and waits at most DrainTimeout for the
// relayed connections to pass on what the namespace sent; it says so in
// the log if some did not. Call it before Close while the namespace
// lives.
func (d *Daemon) Drain() {
	if d.cfg.DrainTimeout <= 0 || d.gw == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.DrainTimeout)
	defer cancel()
	if n := d.gw.Drain(ctx); n > 0 {
		d.log.Warn(fmt.Sprintf("%d relayed connections still sending after the drain timeout %v; closing them", n, d.cfg.DrainTimeout))
	}
}

// Close stops everything Start started, in order, waits for its
// goroutines, and deletes the namespace if Start created it. It is
// idempotent.
func (d *Daemon) Close() error {
	var err error
	d.closeOnce.Do(func() {
		if d.stopWatch != nil {
			d.stopWatch()
			d.watching.Wait()
		}
		if d.stopSpoofLog != nil {
			d.stopSpoofLog()
		}
		if d.stopAuto != nil {
			d.stopAuto()
		}
		if d.nsfwd != nil {
			d.nsfwd.close()
		}
		if d.trim != nil {
			d.trim.Stop()
		}
		if d.ctl != nil {
			d.ctl.Close()
		}
		if d.caps != nil {
			d.caps.Close()
		}
		if d.metrics != nil {
			d.metrics.Close()
		}
		if d.srv != nil {
			d.srv.Close()
		}
		if d.host != nil {
			d.host.Link.SetDivert(nil)
		}
		if d.gw != nil {
			d.gw.Close()
		}
		if d.host != nil {
			err = d.host.Close()
		}
		if d.pcap != nil {
			d.pcap.Close()
		}
		if d.resolv != "" {
			os.Remove(d.resolv)
			os.Remove(filepath.Dir(d.resolv))
		}
	})
	return err
}

// Host is the daemon's host: its stack, link and namespace.
func (d *Daemon) Host() *nshost.Host { return d.host }

// Relay is the daemon's relay.
func (d *Daemon) Relay() *relay.Gateway { return d.gw }

// ControlPath is the path of the daemon's control socket.
func (d *Daemon) ControlPath() string { return d.ctl.Path() }

// Name is the daemon's name (Config.Name).
func (d *Daemon) Name() string { return d.cfg.Name }

// Config is the daemon's configuration, defaults filled in.
func (d *Daemon) Config() Config { return d.cfg }

// Log is the daemon's logger.
func (d *Daemon) Log() *slog.Logger { return d.log }

// The daemon gives free memory back once quiet (see memoryTrimmer),
// looking every trimPeriod for a heap grown by trimThreshold.
const (
	trimPeriod    = 500 * time.Millisecond
	trimThreshold = 1 << 20
)

// spoofLogPeriod is how often the daemon says how many frames from
// sources that are not the namespace's it dropped, if any.
const spoofLogPeriod = time.Minute

// logSpoofed logs, once per period in which there were any, how many
// spoofed frames the link dropped. The returned function stops it.
func logSpoofed(l *link.Endpoint, period time.Duration, logf func(format string, args ...any)) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(period)
		defer t.Stop()
		var last uint64
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if n := l.Stats().RxFiltered; n > last {
				logf("dropped %d frames from sources that are not the namespace's in the last %v (spoofed)", n-last, period)
				last = n
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}
