package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tapstack/tapstack/internal/capture"
	"github.com/tapstack/tapstack/internal/control"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/internal/services"
	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack"
	"github.com/tapstack/tapstack/stack/nshost"
)

// DNS forwarder addresses of the default plan.
var defaultDNSAddrs = []netip.Prefix{netip.MustParsePrefix("10.0.2.3/24"), netip.MustParsePrefix("fd00::3/64")}

// forwardList is the repeatable -p flag.
type forwardList []relay.Forward

func (l *forwardList) String() string {
	var s []string
	for _, f := range *l {
		s = append(s, f.String())
	}
	return strings.Join(s, ",")
}

func (l *forwardList) Set(v string) error {
	f, err := relay.ParseForward(v)
	if err != nil {
		return err
	}
	*l = append(*l, f)
	return nil
}

// prefixFlag is a comma-separated CIDR list flag.
type prefixFlag []netip.Prefix

func (p *prefixFlag) String() string { return joinPrefixes(*p) }

func (p *prefixFlag) Set(v string) error {
	ps, err := relay.ParsePrefixes(v)
	if err != nil {
		return fmt.Errorf("%q: want CIDRs like 10.0.0.0/8,192.0.2.1", v)
	}
	*p = append(*p, ps...)
	return nil
}

// relayFlags are the flags of the relay, shared by up and run.
type relayFlags struct {
	hostLoopback   bool
	allowLinkLocal bool
	allow, deny    prefixFlag
	forwards       forwardList
	maxFlows       int
	maxDials       int
	maxDNS         int
	maxPings       int
	connectTimeout time.Duration
	udpIdle        time.Duration
	noPing         bool
	resolvConf     string
	verbose        bool
	control        string
	metrics        string // --metrics: where /metrics is served
	logs           logFlags
	drainTimeout   time.Duration
	outbound4      string
	outbound6      string
	// dnsAddrs, when not nil, are the DNS forwarder's addresses (empty:
	// no forwarder); nil is the default plan's 10.0.2.3 and fd00::3.
	dnsAddrs []netip.Prefix
}

func (r *relayFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&r.hostLoopback, "host-loopback", false, "let the namespace reach the host's 127.0.0.1/::1 at the stack's first addresses (10.0.2.2, fd00::2)")
	fs.BoolVar(&r.allowLinkLocal, "allow-link-local", false, "let flows reach 169.254.0.0/16 and fe80::/10 (cloud metadata lives there)")
	fs.Var(&r.allow, "allow", "only relay to these `CIDRs` (comma-separated, repeatable)")
	fs.Var(&r.deny, "deny", "never relay to these `CIDRs` (comma-separated, repeatable)")
	fs.Var(&r.forwards, "p", "port forward `[HOSTADDR:]HOSTPORT:NSPORT[/tcp|/udp]`, repeatable; the host side binds 127.0.0.1 unless an address is given")
	fs.IntVar(&r.maxFlows, "max-flows", 4096, "most relayed flows at once")
	fs.IntVar(&r.maxDials, "max-pending-dials", 256, "most host dials in progress at once (32 per address; a less busy address takes a slot from the busiest)")
	fs.IntVar(&r.maxDNS, "max-dns-queries", 256, "most DNS queries forwarded at once (more are dropped; resolvers retry)")
	fs.IntVar(&r.maxPings, "max-pings", 64, "most relayed pings waiting for a reply at once (more are dropped)")
	fs.DurationVar(&r.connectTimeout, "connect-timeout", defaultConnectTimeout, "timeout of a host dial")
	fs.DurationVar(&r.udpIdle, "udp-idle-timeout", defaultUDPIdle, "a UDP flow ends after this long without traffic")
	fs.BoolVar(&r.noPing, "no-ping", false, "do not relay ICMP echo")
	fs.StringVar(&r.resolvConf, "resolv-conf", "/etc/resolv.conf", "`FILE` naming the upstream DNS servers (followed when it changes)")
	fs.BoolVar(&r.verbose, "v", false, "log relay events on stderr: refusals, forwards, each flow's start and end (--log-level debug)")
	fs.StringVar(&r.logs.format, "log-format", "text", "log lines as `text` (key=value) or json")
	fs.StringVar(&r.logs.level, "log-level", "", "log at this `LEVEL` and above: debug, info, warn or error (default info; debug with -v)")
	fs.StringVar(&r.metrics, "metrics", "", "serve Prometheus metrics on http://`ADDR`/metrics (e.g. 127.0.0.1:9464; off by default)")
	fs.DurationVar(&r.drainTimeout, "drain-timeout", defaultDrainTimeout, "on exit, wait at most this long for relayed connections to deliver what the namespace sent (0: do not wait)")
	fs.StringVar(&r.outbound4, "outbound-addr", "", "relayed IPv4 flows leave the host from this `ADDRESS` (or the first IPv4 address of this interface)")
	fs.StringVar(&r.outbound6, "outbound-addr6", "", "relayed IPv6 flows leave the host from this `ADDRESS` (or the first global IPv6 address of this interface)")
	fs.StringVar(&r.control, "control", "", "control socket `PATH` for tapstack forward (default "+control.Dir+"/NETNS.sock)")
}

// session is a running host with its relay and services.
type session struct {
	host   *nshost.Host
	gw     *relay.Gateway
	ctl    *control.Server
	srv    *services.Server
	netns  string
	resolv string // resolv.conf file this session wrote, removed on Close
	trim   *memoryTrimmer
	pcap   *link.Pcap // --pcap, closed after the host
	// pcapPath is --pcap's file.
	pcapPath string
	caps     *capture.Set // captures started through the control socket
	metrics  *metricsServer
	log      *slog.Logger
	offload  bool
	started  time.Time
	// stopSpoofLog stops the goroutine that reports spoofed frames.
	stopSpoofLog func()
}

// Defaults of the relay's timeouts.
const (
	defaultConnectTimeout = 30 * time.Second
	defaultUDPIdle        = 60 * time.Second
)

// defaultDrainTimeout bounds the drain of run (after the command exits)
// and of up (on SIGTERM): long enough for a command's last megabytes to
// leave the namespace's socket buffers, short enough that a connection
// left open by a stray process does not hold the exit for long.
const defaultDrainTimeout = 5 * time.Second

// drain waits up to timeout for relayed connections to pass on what the
// namespace sent, and says so if some did not.
func (s *session) drain(timeout time.Duration) {
	if timeout <= 0 || s.gw == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if n := s.gw.Drain(ctx); n > 0 {
		s.log.Warn(fmt.Sprintf("%d relayed connections still sending after --drain-timeout %v; closing them", n, timeout))
	}
}

func (s *session) Close() {
	if s.stopSpoofLog != nil {
		s.stopSpoofLog()
	}
	if s.trim != nil {
		s.trim.Stop()
	}
	if s.ctl != nil {
		s.ctl.Close()
	}
	if s.caps != nil {
		s.caps.Close()
	}
	if s.metrics != nil {
		s.metrics.Close()
	}
	if s.srv != nil {
		s.srv.Close()
	}
	if s.gw != nil {
		s.gw.Close()
	}
	if s.host != nil {
		s.host.Close()
	}
	if s.pcap != nil {
		s.pcap.Close()
	}
	if s.resolv != "" {
		os.Remove(s.resolv)
		os.Remove(filepath.Dir(s.resolv))
	}
}

// The daemon gives free memory back once quiet (see memoryTrimmer),
// looking every trimPeriod for a heap grown by trimThreshold.
const (
	trimPeriod    = 500 * time.Millisecond
	trimThreshold = 1 << 20
)

// buildFunc makes the host; nshost.New unless the TAP comes from elsewhere.
type buildFunc func(nshost.Config) (*nshost.Host, error)

// startSession builds the host in the namespace with its relay.
func startSession(ctx context.Context, hf *hostFlags, rf *relayFlags, serve []string, stderr io.Writer) (*session, error) {
	return startSessionWith(ctx, hf, rf, serve, stderr, nshost.New)
}

func startSessionWith(ctx context.Context, hf *hostFlags, rf *relayFlags, serve []string, stderr io.Writer, build buildFunc) (*session, error) {
	cfg, err := hf.config()
	if err != nil {
		return nil, err
	}
	if rf.maxFlows < 1 || rf.maxDials < 1 || rf.maxDNS < 1 || rf.maxPings < 1 || rf.connectTimeout <= 0 || rf.udpIdle <= 0 {
		return nil, errors.New("--max-flows, --max-pending-dials, --max-dns-queries, --max-pings, --connect-timeout and --udp-idle-timeout must be positive")
	}
	if rf.drainTimeout < 0 {
		return nil, fmt.Errorf("--drain-timeout %v: must be 0 or more", rf.drainTimeout)
	}
	stackAddrs := cfg.StackAddrs
	if len(stackAddrs) == 0 {
		stackAddrs = nshost.DefaultStackAddrs
	}
	nsAddrs := cfg.NSAddrs
	if len(nsAddrs) == 0 {
		nsAddrs = nshost.DefaultNSAddrs
	}
	var loop, dns, nsIPs []netip.Addr
	for _, fam := range []bool{true, false} {
		for _, p := range stackAddrs {
			if p.Addr().Is4() == fam {
				loop = append(loop, p.Addr())
				break
			}
		}
	}
	dnsPrefixes := defaultDNSAddrs
	if rf.dnsAddrs != nil {
		dnsPrefixes = rf.dnsAddrs
	}
	for _, p := range dnsPrefixes {
		dns = append(dns, p.Addr())
	}
	for _, p := range nsAddrs {
		nsIPs = append(nsIPs, p.Addr())
	}
	var outbound []netip.Addr
	for _, o := range []struct {
		flag, val string
		v4        bool
	}{{"--outbound-addr", rf.outbound4, true}, {"--outbound-addr6", rf.outbound6, false}} {
		if o.val == "" {
			continue
		}
		a, err := outboundAddr(o.val, o.v4)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", o.flag, o.val, err)
		}
		outbound = append(outbound, a)
	}
	// The session's name: its namespace's, or one made of what names it.
	name := cfg.Netns
	switch {
	case cfg.PID != 0:
		name = fmt.Sprintf("pid-%d", cfg.PID)
	case cfg.NetnsPath != "":
		name = "path-" + strings.ReplaceAll(strings.Trim(cfg.NetnsPath, "/"), "/", "-")
	case hf.userns != "":
		name = hf.userns
	}
	logger, err := newLogger(stderr, rf.logs.format, rf.logs.level, rf.verbose, name)
	if err != nil {
		return nil, err
	}
	logf := printf(logger)
	gcfg := relay.Config{
		OutboundAddrs: outbound,
		MaxFlows:      rf.maxFlows, MaxPendingDials: rf.maxDials, MaxDNSQueries: rf.maxDNS, MaxPings: rf.maxPings,
		ConnectTimeout: rf.connectTimeout, UDPIdleTimeout: rf.udpIdle,
		HostLoopback: rf.hostLoopback, LoopbackAddrs: loop, AllowLinkLocal: rf.allowLinkLocal,
		Allow: rf.allow, Deny: rf.deny, DNSAddrs: dns, ResolvConf: rf.resolvConf, NoPing: rf.noPing,
		Forwards: rf.forwards, NSAddrs: nsIPs, Log: logger,
	}
	// Forwards to other addresses of the namespace are checked and let
	// through the source filter by the host, once it exists.
	var host *nshost.Host
	gcfg.AddGuest = func(a netip.Addr) error {
		if host == nil {
			return errors.New("the host is not up yet")
		}
		return host.AddGuest(a)
	}
	gw := relay.New(gcfg)
	cfg.Gateway = true
	cfg.ExtraStackAddrs = dnsPrefixes
	cfg.Init = gw.Install
	cfg.Logf = logf
	cfg.FilterSources = true
	s := &session{gw: gw, netns: name, log: logger, offload: cfg.Offload, started: time.Now(), pcapPath: hf.pcap}
	if cfg.PID == 0 && cfg.Netns != "" && hf.userns == "" {
		// The namespace's resolver, as ip netns exec shows it.
		dir := filepath.Join("/etc/netns", cfg.Netns)
		rc := filepath.Join(dir, "resolv.conf")
		if _, err := os.Stat(rc); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(dir, 0o755); err == nil {
				if err := os.WriteFile(rc, []byte("nameserver 10.0.2.3\nnameserver fd00::3\n"), 0o644); err == nil {
					s.resolv = rc
				}
			}
		}
	}
	if s.pcap, err = hf.capture(&cfg); err != nil {
		s.Close()
		return nil, err
	}
	h, err := build(cfg)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.host, host = h, h
	if !cfg.Impair.IsZero() {
		logger.Info(impairLine(cfg))
	}
	s.caps = capture.New(h.Link)
	if err := gw.Start(); err != nil {
		s.Close()
		return nil, err
	}
	if len(serve) > 0 {
		srv, err := services.Start(h.Stack, serve...)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.srv = srv
	}
	ctlPath := rf.control
	if ctlPath == "" {
		ctlPath = control.PathFor(name)
		if len(ctlPath) > 100 { // a unix socket path holds 107 bytes
			sum := sha256.Sum256([]byte(name))
			ctlPath = control.PathFor("ns-" + hex.EncodeToString(sum[:8]))
		}
	}
	ctl, err := control.Listen(ctlPath, daemonControl{s: s, ControlHandler: relay.ControlHandler{G: gw, Extra: func() map[string]uint64 {
		ls := h.Link.Stats()
		up, down := gw.Bytes()
		return map[string]uint64{
			"rx_frames": ls.RxFrames, "tx_frames": ls.TxFrames, "rx_errors": ls.RxErrors, "tx_errors": ls.TxErrors,
			"rx_spoofed": ls.RxFiltered, "bytes_up": up, "bytes_down": down,
		}
	}}}, logf)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s.ctl = ctl
	if rf.metrics != "" {
		if s.metrics, err = startMetrics(rf.metrics, name, h, gw, logger); err != nil {
			s.Close()
			return nil, err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = h.WaitReady(rctx)
	cancel()
	if err != nil {
		s.Close()
		return nil, err
	}
	s.trim = startTrimmer(trimPeriod, trimThreshold, func() uint64 {
		ls := h.Link.Stats()
		return ls.RxFrames + ls.TxFrames
	})
	s.stopSpoofLog = logSpoofed(h.Link, spoofLogPeriod, logf)
	return s, nil
}

// maxSocketsFor sizes the socket table for a relay: every relayed flow
// holds one socket.
func maxSocketsFor(hf *hostFlags, rf *relayFlags) {
	if hf.maxSockets == stack.DefaultMaxSockets && rf.maxFlows+64 > hf.maxSockets {
		hf.maxSockets = rf.maxFlows + 64
	}
}

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

// outboundAddr resolves an --outbound-addr value: an address of the
// family (v4 or not), or an interface whose first such address is taken
// (for IPv6 a global one). The host must have it: a socket is bound to it.
func outboundAddr(val string, v4 bool) (netip.Addr, error) {
	family := "IPv6"
	if v4 {
		family = "IPv4"
	}
	a, err := netip.ParseAddr(val)
	if err != nil {
		ifi, ierr := net.InterfaceByName(val)
		if ierr != nil {
			return netip.Addr{}, fmt.Errorf("neither an %s address nor an interface: %w", family, ierr)
		}
		addrs, _ := ifi.Addrs()
		for _, ia := range addrs {
			p, perr := netip.ParsePrefix(ia.String())
			if perr == nil && p.Addr().Is4() == v4 && (v4 || p.Addr().IsGlobalUnicast()) {
				a = p.Addr()
				break
			}
		}
		if !a.IsValid() {
			return netip.Addr{}, fmt.Errorf("interface %s has no %s address", val, family)
		}
	}
	a = a.Unmap()
	if a.Is4() != v4 || a.IsUnspecified() || a.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("want a unicast %s address or an interface name", family)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: a.AsSlice()})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("not usable as a source on this host: %w", err)
	}
	c.Close()
	return a, nil
}
