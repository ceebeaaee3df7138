package main

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"syscall"

	"github.com/tapstack/tapstack/internal/services"
	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack"
	"github.com/tapstack/tapstack/stack/nshost"
)

// prefixList is a repeatable CIDR flag.
type prefixList []netip.Prefix

func (p *prefixList) String() string {
	var s []string
	for _, x := range *p {
		s = append(s, x.String())
	}
	return strings.Join(s, ",")
}

func (p *prefixList) Set(v string) error {
	x, err := netip.ParsePrefix(v)
	if err != nil {
		return fmt.Errorf("%q is not an address with prefix length like 10.0.2.2/24", v)
	}
	*p = append(*p, x)
	return nil
}

// daemonMTU is the TAP MTU of up, run and nc: as pasta does, 65520, which
// the relay benchmark (scripts/bench-relay.sh) shows pays three to six times
// over 1500. The library's default stays link.DefaultMTU.
const daemonMTU = link.MaxMTU

// hostFlags are the flags shared by every command that builds a host in a
// namespace.
type hostFlags struct {
	netns      string
	tap        string
	mtu        int
	addrs      prefixList
	nsAddrs    prefixList
	maxSockets int
	offload    bool
	txQueues   int
	procs      int
	pid        int
	userns     string // set for a rootless run: the name of its session
	// Set by tapstack slirp4netns only:
	netnsPath   string           // the namespace of this file
	noConfigure bool             // leave the kernel side to the caller
	mac         net.HardwareAddr // the kernel side's MAC
	// Packet capture (--pcap and friends).
	pcap        string
	pcapSnaplen int
	pcapSize    int
	pcapFiles   int
	socketSites bool
	impair      string // --impair
	impairSeed  int64  // --impair-seed; 0: a random one
}

func (h *hostFlags) register(fs *flag.FlagSet, defaultNetns string) {
	fs.StringVar(&h.netns, "netns", defaultNetns, "network namespace `NAME` (created if missing, deleted on exit only if created)")
	fs.StringVar(&h.tap, "tap", nshost.DefaultTAP, "TAP interface `NAME` inside the namespace")
	fs.IntVar(&h.mtu, "mtu", daemonMTU, "IP MTU of the TAP (1280..65520)")
	fs.Var(&h.addrs, "addr", "stack address `CIDR`, repeatable (default 10.0.2.2/24 and fd00::2/64)")
	fs.Var(&h.nsAddrs, "ns-addr", "namespace-side address `CIDR`, repeatable (default 10.0.2.100/24 and fd00::100/64)")
	fs.IntVar(&h.maxSockets, "max-sockets", stack.DefaultMaxSockets, "capacity of the stack's socket table")
	fs.BoolVar(&h.offload, "offload", true, "open the TAP with virtio_net_hdr: TSO and checksum offload both ways (false: a plain TAP opened with water)")
	fs.IntVar(&h.procs, "procs", 0, "CPUs the stack may use at once (GOMAXPROCS; 0: $GOMAXPROCS if set, else half the CPUs, at least 1)")
	fs.StringVar(&h.pcap, "pcap", "", "write every frame on the TAP, both ways, to this pcap `FILE` (tcpdump -r, tshark -r, Wireshark)")
	fs.IntVar(&h.pcapSnaplen, "pcap-snaplen", link.DefaultSnaplen, "keep at most this many `BYTES` of each captured frame (64.."+fmt.Sprint(link.DefaultSnaplen)+")")
	fs.IntVar(&h.pcapSize, "pcap-size", 0, "start a new capture file when the current one would pass this many `MiB` (0: no limit)")
	fs.IntVar(&h.pcapFiles, "pcap-files", 1, "with --pcap-size, keep this many full files (FILE.1, FILE.2, …) beside the current one")
	fs.BoolVar(&h.socketSites, "socket-sites", false, "record where each socket of the stack was made (tapstack ss -a shows it; a full table's error names the top three places)")
	fs.StringVar(&h.impair, "impair", "", "impair the wire: `SPEC` such as loss=1%,delay=20ms,jitter=5ms,reorder=1%,dup=0.1%,corrupt=0.1%,rate=100mbit (in: or out: before a key: one way only)")
	fs.Int64Var(&h.impairSeed, "impair-seed", 0, "`N`: the seed of the impairment's decisions, to replay a run (0: a random seed, printed)")
	fs.IntVar(&h.txQueues, "tx-queues", 1, fmt.Sprintf("transmit queues, each with a goroutine writing to the TAP (0..%d; 0: the sender writes)", stack.MaxTxQueues))
}

func (h *hostFlags) config() (nshost.Config, error) {
	if h.maxSockets < 1 {
		return nshost.Config{}, fmt.Errorf("--max-sockets %d: must be at least 1", h.maxSockets)
	}
	if h.procs < 0 {
		return nshost.Config{}, fmt.Errorf("--procs %d: must be 0 or more", h.procs)
	}
	runtime.GOMAXPROCS(daemonProcs(h.procs, os.Getenv("GOMAXPROCS"), runtime.NumCPU()))
	if h.txQueues < 0 || h.txQueues > stack.MaxTxQueues {
		return nshost.Config{}, fmt.Errorf("--tx-queues %d: must be 0..%d", h.txQueues, stack.MaxTxQueues)
	}
	netnsName := h.netns
	if h.pid != 0 || h.netnsPath != "" {
		netnsName = ""
	}
	imp, err := link.ParseImpairSpec(h.impair)
	if err != nil {
		return nshost.Config{}, fmt.Errorf("--impair: %w", err)
	}
	seed := h.impairSeed
	if seed == 0 {
		seed = randomSeed()
	}
	return nshost.Config{
		Netns: netnsName, PID: h.pid, NetnsPath: h.netnsPath, NoConfigure: h.noConfigure, MAC: h.mac,
		TAP: h.tap, MTU: h.mtu, Offload: h.offload, TxQueues: h.txQueues,
		StackAddrs: h.addrs, NSAddrs: h.nsAddrs, MaxSockets: h.maxSockets, SocketSites: h.socketSites,
		Impair: imp, ImpairSeed: seed, Impairable: true,
	}, nil
}

// daemonProcs is the GOMAXPROCS of a daemon: flag if set, else the
// environment's GOMAXPROCS if set, else half the CPUs (at least 1). The
// stack shares the machine with the namespace's programs and with the
// kernel's side of the TAP; on 2 CPUs one P gave lower latency, more
// connections per second and as much throughput as two, because gVisor's
// per-P TCP processors then hand packets across CPUs and spin on each
// other's locks.
func daemonProcs(flag int, env string, cpus int) int {
	if flag > 0 {
		return flag
	}
	if n, err := strconv.Atoi(env); err == nil && n > 0 {
		return n
	}
	return max(1, cpus/2)
}

// preflight explains a missing TUN device or privilege in one line.
func preflight() error {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("%w (%v)", link.ErrNoTUN, err)
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: creating a TAP and a network namespace takes CAP_NET_ADMIN and CAP_SYS_ADMIN (try sudo)")
	}
	return nil
}

func runUp(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("up", "", stderr)
	var hf hostFlags
	var rf relayFlags
	hf.register(fs, "tapstack")
	rf.register(fs)
	pid := fs.Int("pid", 0, "use the network namespace of process `PID` (as slirp4netns PID does) instead of --netns")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile to `FILE` until the daemon stops (for performance work)")
	traceFile := fs.String("trace", "", "write a Go execution trace to `FILE` until the daemon stops (go tool trace reads it; for latency work)")
	serve := fs.String("serve", "echo,discard", "built-in services to run, comma-separated ("+strings.Join(services.Names(), ", ")+"), or none")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tapstack up: unexpected argument %q (see -h)\n", fs.Arg(0))
		return errUsage
	}
	if *pid < 0 {
		return fmt.Errorf("--pid %d: not a process ID", *pid)
	}
	names, err := serviceNames(*serve)
	if err != nil {
		return err
	}
	if err := preflight(); err != nil {
		return err
	}
	hf.pid = *pid
	maxSocketsFor(&hf, &rf)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return fmt.Errorf("trace: %w", err)
		}
		defer trace.Stop()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := startSession(ctx, &hf, &rf, names, stderr)
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting: a clean stop
		}
		return err
	}
	defer s.Close()
	where := hf.netns
	if *pid != 0 {
		where = fmt.Sprintf("pid %d", *pid)
	}
	printReady(stdout, s.host, where, names, *pid == 0)
	fmt.Fprintf(stdout, "  control: tapstack forward --control %s add|rm|ls\n", s.ctl.Path())
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	select {
	case <-ctx.Done():
		// SIGTERM or Ctrl-C: refuse new flows, let the open ones
		// deliver what the namespace sent, then stop.
		s.log.Info("stopping")
		s.drain(rf.drainTimeout)
		return nil
	case why := <-watchGone(wctx, hf.netns, *pid):
		if *pid != 0 {
			// The process whose namespace this is has ended: the
			// normal end of a --pid daemon, as of slirp4netns.
			s.log.Info(why + "; stopping")
			return nil
		}
		return fmt.Errorf("%s; stopping", why)
	case <-s.host.Link.Failed():
		return fmt.Errorf("the TAP %s is gone (%v); stopping", s.host.TAP, s.host.Link.Err())
	}
}

func serviceNames(serve string) ([]string, error) {
	if serve == "none" || serve == "" {
		return nil, nil
	}
	names := strings.Split(serve, ",")
	for _, n := range names {
		if _, ok := services.Ports[n]; !ok {
			return nil, fmt.Errorf("--serve: unknown service %q (known: %s)", n, strings.Join(services.Names(), ", "))
		}
	}
	return names, nil
}

func printReady(w io.Writer, h *nshost.Host, netns string, names []string, named bool) {
	fmt.Fprintf(w, "ready netns=%s tap=%s mtu=%d stack=%s ns=%s\n", netns, h.TAP, h.MTU, joinPrefixes(h.StackAddrs), joinPrefixes(h.NSAddrs))
	fmt.Fprintf(w, "  the namespace %q reaches the stack at %s\n", netns, joinAddrs(h.StackAddrs))
	if len(names) > 0 {
		var ports []string
		for _, n := range names {
			ports = append(ports, fmt.Sprintf("%s %d/tcp+udp", n, services.Ports[n]))
		}
		fmt.Fprintf(w, "  services: %s\n", strings.Join(ports, ", "))
	}
	fmt.Fprintln(w, "  other destinations are relayed through this host; DNS at 10.0.2.3 and fd00::3")
	first := h.StackAddrs[0].Addr()
	if named {
		fmt.Fprintf(w, "  try: sudo ip netns exec %s ping -c1 %s\n", netns, first)
		if contains(names, "echo") {
			fmt.Fprintf(w, "  try: echo hi | sudo ip netns exec %s nc -N %s 7\n", netns, first)
		}
	}
	fmt.Fprintln(w, "  stop with Ctrl-C or SIGTERM")
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func joinPrefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, ",")
}

func joinAddrs(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Addr().String())
	}
	return strings.Join(s, " and ")
}

// capture opens the --pcap file, if any, and sets it as cfg's observer.
// The caller closes it once the host is closed.
func (h *hostFlags) capture(cfg *nshost.Config) (*link.Pcap, error) {
	if h.pcap == "" {
		return nil, nil
	}
	if h.pcapSize < 0 || h.pcapFiles < 1 {
		return nil, fmt.Errorf("--pcap-size %d, --pcap-files %d: want a size of 0 or more MiB and at least 1 file", h.pcapSize, h.pcapFiles)
	}
	p, err := link.CreatePcap(h.pcap, link.PcapOptions{Snaplen: h.pcapSnaplen, MaxSize: int64(h.pcapSize) << 20, Keep: h.pcapFiles})
	if err != nil {
		return nil, fmt.Errorf("--pcap %s: %w", h.pcap, err)
	}
	cfg.Observer = p
	return p, nil
}

// randomSeed is a seed for an impairment that was given none.
func randomSeed() int64 {
	var b [8]byte
	_, _ = crand.Read(b[:])
	return int64(binary.LittleEndian.Uint64(b[:])&^(1<<63) | 1)
}

// impairLine says what impairs the wire and how to replay it.
func impairLine(cfg nshost.Config) string {
	return fmt.Sprintf("impairing the wire: %v (seed %d; replay with --impair-seed %d)", cfg.Impair, cfg.ImpairSeed, cfg.ImpairSeed)
}
