package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/internal/control"
	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/stack"
	"github.com/tapstack/tapstack/stack/nshost"
)

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

// cidrList is a comma-separated, repeatable CIDR list flag.
type cidrList []netip.Prefix

func (p *cidrList) String() string { return joinPrefixes(*p) }

func (p *cidrList) Set(v string) error {
	ps, err := relay.ParsePrefixes(v)
	if err != nil {
		return fmt.Errorf("%q: want CIDRs like 10.0.0.0/8,192.0.2.1", v)
	}
	*p = append(*p, ps...)
	return nil
}

// prefixList is a repeatable address-with-prefix flag.
type prefixList []netip.Prefix

func (p *prefixList) String() string { return joinPrefixes(*p) }

func (p *prefixList) Set(v string) error {
	x, err := netip.ParsePrefix(v)
	if err != nil {
		return fmt.Errorf("%q is not an address with prefix length like 10.0.2.2/24", v)
	}
	*p = append(*p, x)
	return nil
}

// hostFlags are the flags of every command that builds a host in a
// namespace (up, run, nc). Their defaults are the library's.
type hostFlags struct {
	netns                 string
	tap                   string
	mtu, maxSockets       int
	addrs, nsAddrs        prefixList
	offload, socketSites  bool
	txQueues, procs       int
	pcap                  string
	pcapSnaplen, pcapSize int
	pcapFiles             int
	impair                string
	impairSeed            int64
}

// relayFlags are the flags of the relay and the daemon around it (up
// and run).
type relayFlags struct {
	hostLoopback, linkLocal bool
	allow, deny             cidrList
	forwards                forwardList
	maxFlows, maxDials      int
	maxDNS, maxPings        int
	connectTimeout, udpIdle time.Duration
	drainTimeout            time.Duration
	noPing, verbose         bool
	resolvConf, control     string
	metrics                 string
	logFormat, logLevel     string
	outbound4, outbound6    string
	engine                  string
}

// daemonFlags are the flags of up and run, turned into a daemon.Config
// by config.
type daemonFlags struct {
	hostFlags
	relayFlags
}

func (f *daemonFlags) register(fs *flag.FlagSet, defaultNetns string) {
	f.hostFlags.register(fs, defaultNetns)
	f.relayFlags.register(fs)
}

func (f *hostFlags) register(fs *flag.FlagSet, defaultNetns string) {
	fs.StringVar(&f.netns, "netns", defaultNetns, "network namespace `NAME` (created if missing, deleted on exit only if created)")
	fs.StringVar(&f.tap, "tap", nshost.DefaultTAP, "TAP interface `NAME` inside the namespace")
	fs.IntVar(&f.mtu, "mtu", daemon.DefaultMTU, "IP MTU of the TAP (1280..65520)")
	fs.Var(&f.addrs, "addr", "stack address `CIDR`, repeatable (default "+joinPrefixes(nshost.DefaultPlan().Stack)+")")
	fs.Var(&f.nsAddrs, "ns-addr", "namespace-side address `CIDR`, repeatable (default "+joinPrefixes(nshost.DefaultPlan().NS)+")")
	fs.IntVar(&f.maxSockets, "max-sockets", stack.DefaultMaxSockets, "capacity of the stack's socket table (up and run raise it to --max-flows + 64 when smaller)")
	fs.BoolVar(&f.offload, "offload", true, "open the TAP with virtio_net_hdr: TSO and checksum offload both ways (false: a plain TAP opened with water)")
	fs.IntVar(&f.procs, "procs", 0, "CPUs the stack may use at once (GOMAXPROCS; 0: $GOMAXPROCS if set, else half the CPUs, at least 1); the flow engine's loop runs beside them, on one more, while it relays flows")
	fs.StringVar(&f.pcap, "pcap", "", "write every frame on the TAP, both ways, to this pcap `FILE` (tcpdump -r, tshark -r, Wireshark)")
	fs.IntVar(&f.pcapSnaplen, "pcap-snaplen", link.DefaultSnaplen, "keep at most this many `BYTES` of each captured frame (64.."+fmt.Sprint(link.DefaultSnaplen)+")")
	fs.IntVar(&f.pcapSize, "pcap-size", 0, "start a new capture file when the current one would pass this many `MiB` (0: no limit)")
	fs.IntVar(&f.pcapFiles, "pcap-files", 1, "with --pcap-size, keep this many full files (FILE.1, FILE.2, …) beside the current one")
	fs.BoolVar(&f.socketSites, "socket-sites", false, "record where each socket of the stack was made (tapstack ss -a shows it; a full table's error names the top three places)")
	fs.StringVar(&f.impair, "impair", "", "impair the wire: `SPEC` such as loss=1%,delay=20ms,jitter=5ms,reorder=1%,dup=0.1%,corrupt=0.1%,rate=100mbit (in: or out: before a key: one way only)")
	fs.Int64Var(&f.impairSeed, "impair-seed", 0, "`N`: the seed of the impairment's decisions, to replay a run (0: a random seed, printed)")
	fs.IntVar(&f.txQueues, "tx-queues", daemon.DefaultTxQueues, fmt.Sprintf("transmit queues, each with a goroutine writing to the TAP (0..%d; 0: the sender writes)", stack.MaxTxQueues))
}

func (f *relayFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.hostLoopback, "host-loopback", false, "let the namespace reach the host's 127.0.0.1/::1 at the stack's first addresses (10.0.2.2, fd00::2)")
	fs.BoolVar(&f.linkLocal, "allow-link-local", false, "let flows reach 169.254.0.0/16 and fe80::/10 (cloud metadata lives there)")
	fs.Var(&f.allow, "allow", "only relay to these `CIDRs` (comma-separated, repeatable)")
	fs.Var(&f.deny, "deny", "never relay to these `CIDRs` (comma-separated, repeatable)")
	fs.Var(&f.forwards, "p", "port forward `[HOSTADDR:]HOSTPORT:NSPORT[/tcp|/udp]`, repeatable; the host side binds 127.0.0.1 unless an address is given")
	fs.IntVar(&f.maxFlows, "max-flows", relay.DefaultMaxFlows, "most relayed flows at once")
	fs.IntVar(&f.maxDials, "max-pending-dials", relay.DefaultMaxPendingDials, fmt.Sprintf("most host dials in progress at once (%d per address; a less busy address takes a slot from the busiest)", relay.DefaultMaxPendingPerDest))
	fs.IntVar(&f.maxDNS, "max-dns-queries", relay.DefaultMaxDNSQueries, "most DNS queries forwarded at once (more are dropped; resolvers retry)")
	fs.IntVar(&f.maxPings, "max-pings", relay.DefaultMaxPings, "most relayed pings waiting for a reply at once (more are dropped)")
	fs.DurationVar(&f.connectTimeout, "connect-timeout", relay.DefaultConnectTimeout, "timeout of a host dial")
	fs.DurationVar(&f.udpIdle, "udp-idle-timeout", relay.DefaultUDPIdleTimeout, "a UDP flow ends after this long without traffic")
	fs.StringVar(&f.engine, "relay-engine", "", "how TCP and UDP are relayed: `ENGINE` flow (the flow engine: sequence numbers mapped onto the host socket; the default on Linux 6.9 and later) or stack (a socket of the stack per connection; the default before)")
	fs.BoolVar(&f.noPing, "no-ping", false, "do not relay ICMP echo")
	fs.StringVar(&f.resolvConf, "resolv-conf", relay.DefaultResolvConf, "`FILE` naming the upstream DNS servers (followed when it changes)")
	fs.BoolVar(&f.verbose, "v", false, "log relay events on stderr: refusals, forwards, each flow's start and end (--log-level debug)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log lines as `text` (key=value) or json")
	fs.StringVar(&f.logLevel, "log-level", "", "log at this `LEVEL` and above: debug, info, warn or error (default info; debug with -v)")
	fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics on http://`ADDR`/metrics (e.g. 127.0.0.1:9464; off by default)")
	fs.DurationVar(&f.drainTimeout, "drain-timeout", daemon.DefaultDrainTimeout, "on exit, wait at most this long for relayed connections to deliver what the namespace sent (0: do not wait)")
	fs.StringVar(&f.outbound4, "outbound-addr", "", "relayed IPv4 flows leave the host from this `ADDRESS` (or the first IPv4 address of this interface)")
	fs.StringVar(&f.outbound6, "outbound-addr6", "", "relayed IPv6 flows leave the host from this `ADDRESS` (or the first global IPv6 address of this interface)")
	fs.StringVar(&f.control, "control", "", "control socket `PATH` for tapstack forward (default "+control.Dir+"/NETNS.sock)")
}

// config turns the flags into a daemon's configuration; --procs is the
// command's to apply (setProcs).
func (f *daemonFlags) config(stderr io.Writer) (daemon.Config, error) {
	if err := f.check(); err != nil {
		return daemon.Config{}, err
	}
	if f.maxFlows < 1 || f.maxDials < 1 || f.maxDNS < 1 || f.maxPings < 1 || f.connectTimeout <= 0 || f.udpIdle <= 0 {
		return daemon.Config{}, fmt.Errorf("--max-flows, --max-pending-dials, --max-dns-queries, --max-pings, --connect-timeout and --udp-idle-timeout must be positive")
	}
	if f.drainTimeout < 0 {
		return daemon.Config{}, fmt.Errorf("--drain-timeout %v: must be 0 or more", f.drainTimeout)
	}
	imp, err := link.ParseImpairSpec(f.impair)
	if err != nil {
		return daemon.Config{}, fmt.Errorf("--impair: %w", err)
	}
	log, err := daemon.NewLogger(stderr, f.logFormat, f.logLevel, f.verbose)
	if err != nil {
		return daemon.Config{}, err
	}
	plan := nshost.DefaultPlan()
	if len(f.addrs) > 0 {
		plan.Stack = f.addrs
	}
	if len(f.nsAddrs) > 0 {
		plan.NS = f.nsAddrs
	}
	cfg := daemon.Config{
		Netns: f.netns, TAP: f.tap, MTU: f.mtu, NoOffload: !f.offload, TxQueues: f.txQueues,
		Plan: plan, MaxSockets: max(f.maxSockets, f.maxFlows+64), SocketSites: f.socketSites,
		Relay: relay.Config{
			MaxFlows: f.maxFlows, MaxPendingDials: f.maxDials, MaxDNSQueries: f.maxDNS, MaxPings: f.maxPings,
			ConnectTimeout: f.connectTimeout, UDPIdleTimeout: f.udpIdle,
			HostLoopback: f.hostLoopback, AllowLinkLocal: f.linkLocal, Allow: f.allow, Deny: f.deny,
			ResolvConf: f.resolvConf, NoPing: f.noPing, Forwards: f.forwards, Engine: f.engine,
		},
		Control: f.control, Metrics: f.metrics,
		Pcap:        f.pcap,
		PcapOptions: link.PcapOptions{Snaplen: f.pcapSnaplen, MaxSize: int64(f.pcapSize) << 20, Keep: f.pcapFiles},
		Impair:      imp, ImpairSeed: f.impairSeed,
		DrainTimeout: f.drainTimeout, Log: log,
	}
	if f.maxSockets != stack.DefaultMaxSockets {
		cfg.MaxSockets = f.maxSockets // as asked, even below --max-flows
	}
	if f.txQueues == 0 {
		cfg.TxQueues = -1
	}
	if f.drainTimeout == 0 {
		cfg.DrainTimeout = -1
	}
	if cfg.Relay.OutboundAddrs, err = outboundAddrs(f.outbound4, f.outbound6); err != nil {
		return daemon.Config{}, err
	}
	return cfg, nil
}

// outboundAddrs resolves --outbound-addr and --outbound-addr6.
func outboundAddrs(v4, v6 string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, o := range []struct {
		flag, val string
		v4        bool
	}{{"--outbound-addr", v4, true}, {"--outbound-addr6", v6, false}} {
		if o.val == "" {
			continue
		}
		a, err := relay.OutboundAddr(o.val, o.v4)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", o.flag, o.val, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// check checks the host flags' values.
func (f *hostFlags) check() error {
	if f.maxSockets < 1 {
		return fmt.Errorf("--max-sockets %d: must be at least 1", f.maxSockets)
	}
	if f.procs < 0 {
		return fmt.Errorf("--procs %d: must be 0 or more", f.procs)
	}
	if f.txQueues < 0 || f.txQueues > stack.MaxTxQueues {
		return fmt.Errorf("--tx-queues %d: must be 0..%d", f.txQueues, stack.MaxTxQueues)
	}
	if f.pcapSize < 0 || f.pcapFiles < 1 {
		return fmt.Errorf("--pcap-size %d, --pcap-files %d: want a size of 0 or more MiB and at least 1 file", f.pcapSize, f.pcapFiles)
	}
	return nil
}

// setProcs sets GOMAXPROCS for a daemon: the flag if set, else the
// environment's GOMAXPROCS if set, else half the CPUs (at least 1). The
// stack shares the machine with the namespace's programs and with the
// kernel's side of the TAP; on 2 CPUs one P gave lower latency, more
// connections per second and as much throughput as two, because gVisor's
// per-P TCP processors then hand packets across CPUs and spin on each
// other's locks.
func setProcs(flag int) {
	runtime.GOMAXPROCS(daemonProcs(flag, os.Getenv("GOMAXPROCS"), runtime.NumCPU()))
}

func daemonProcs(flag int, env string, cpus int) int {
	if flag > 0 {
		return flag
	}
	if n, err := strconv.Atoi(env); err == nil && n > 0 {
		return n
	}
	return max(1, cpus/2)
}

func joinPrefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, ",")
}

// nshost turns the host flags into a bare host's configuration, for a
// command that runs no relay (nc). The capture, if any, is the caller's
// to close after the host.
func (f *hostFlags) nshost(stderr io.Writer) (nshost.Config, *link.Pcap, error) {
	if err := f.check(); err != nil {
		return nshost.Config{}, nil, err
	}
	imp, err := link.ParseImpairSpec(f.impair)
	if err != nil {
		return nshost.Config{}, nil, fmt.Errorf("--impair: %w", err)
	}
	seed := f.impairSeed
	if seed == 0 {
		seed = time.Now().UnixNano() | 1
	}
	if !imp.IsZero() {
		fmt.Fprintf(stderr, "impairing the wire: %v (seed %d; replay with --impair-seed %d)\n", imp, seed, seed)
	}
	cfg := nshost.Config{
		Netns: f.netns, TAP: f.tap, MTU: f.mtu, Offload: f.offload, TxQueues: f.txQueues,
		StackAddrs: f.addrs, NSAddrs: f.nsAddrs, MaxSockets: f.maxSockets, SocketSites: f.socketSites,
		Impair: imp, ImpairSeed: seed, Impairable: true,
	}
	if f.pcap == "" {
		return cfg, nil, nil
	}
	p, err := link.CreatePcap(f.pcap, link.PcapOptions{Snaplen: f.pcapSnaplen, MaxSize: int64(f.pcapSize) << 20, Keep: f.pcapFiles})
	if err != nil {
		return nshost.Config{}, nil, fmt.Errorf("--pcap %s: %w", f.pcap, err)
	}
	cfg.Observer = p
	return cfg, p, nil
}
