package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/internal/sandbox"
	"github.com/tapstack/tapstack/internal/slirpapi"
	"github.com/tapstack/tapstack/link"
)

// slirpVersion is what -v reports as the slirp4netns version spoken: the
// command line and API of slirp4netns 1.2.
const slirpVersion = "1.2.0"

// slirpOptions are slirp4netns's options (its man page, version 1.2).
type slirpOptions struct {
	configure      bool
	exitFD         int
	readyFD        int
	mtu            int
	cidr           netip.Prefix
	noHostLoopback bool
	netnsType      string
	usernsPath     string
	apiSocket      string
	ipv6           bool
	noDNS          bool
	outbound4      string
	outbound6      string
	mac            net.HardwareAddr
	sandbox        bool
	seccomp        bool
	targetType     string
	target         string // PID or PATH
	tap            string
	warnings       []string // options accepted that do not apply
}

// errSlirpHelp and errSlirpVersion end parsing successfully.
var (
	errSlirpHelp    = errors.New("help")
	errSlirpVersion = errors.New("version")
)

// slirpUsage lists the options as slirp4netns --help does.
const slirpUsage = `Usage: %s [OPTION]... PID|PATH [TAPNAME]
User-mode networking for network namespaces, by tapstack (slirp4netns's
command line and API).

-c, --configure          bring up the interface
-e, --exit-fd=FD         specify the FD for terminating slirp4netns
-r, --ready-fd=FD        specify the FD to write to when the network is configured
-m, --mtu=MTU            specify MTU (default=1500, max=65520)
-6, --enable-ipv6        enable IPv6
-a, --api-socket=PATH    specify API socket path
--cidr=CIDR              specify network address CIDR (default=10.0.2.0/24)
--disable-host-loopback  prohibit connecting to 127.0.0.1:* on the host namespace
--netns-type=TYPE        specify network namespace type ([path|pid], default=pid)
--userns-path=PATH       specify user namespace path
--enable-sandbox         drop capabilities, restrict the file system to /etc and /run (read-only)
--enable-seccomp         kill the process on execve, ptrace, mount, setns and other dangerous syscalls
--outbound-addr=IPv4     relayed IPv4 flows leave from this address or interface
--outbound-addr6=IPv6    relayed IPv6 flows leave from this address or interface
--disable-dns            disables 10.0.2.3 (or the --cidr equivalent) to host DNS
--macaddress=MAC         specify the MAC address of the TAP (only valid with -c)
--target-type=TYPE       specify the target type ([netns], default=netns)
-h, --help               show this help and exit
-v, --version            show version and exit
`

// parseSlirpArgs parses args the way slirp4netns's getopt_long does:
// short options may be grouped (-c6) and take their value attached or as
// the next argument, long ones as --opt=value or --opt value, and
// options may come after the operands.
func parseSlirpArgs(args []string) (*slirpOptions, error) {
	o := &slirpOptions{exitFD: -1, readyFD: -1, mtu: 1500, netnsType: "pid", targetType: "netns",
		cidr: netip.MustParsePrefix("10.0.2.0/24")}
	needsValue := map[string]bool{"e": true, "r": true, "m": true, "a": true, "exit-fd": true, "ready-fd": true,
		"mtu": true, "api-socket": true, "cidr": true, "netns-type": true, "userns-path": true, "outbound-addr": true,
		"outbound-addr6": true, "macaddress": true, "target-type": true}
	short := map[byte]string{'c': "configure", 'e': "exit-fd", 'r': "ready-fd", 'm': "mtu", 'a': "api-socket",
		'6': "enable-ipv6", 'h': "help", 'v': "version"}
	var operands []string
	set := func(name, val string) error {
		fd := func() (int, error) {
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("%s must be a non-negative integer", name)
			}
			return n, nil
		}
		var err error
		switch name {
		case "configure":
			o.configure = true
		case "exit-fd":
			o.exitFD, err = fd()
		case "ready-fd":
			o.readyFD, err = fd()
		case "mtu":
			o.mtu, err = strconv.Atoi(val)
			if err != nil || o.mtu < 1280 || o.mtu > link.MaxMTU {
				err = fmt.Errorf("MTU must be an integer from 1280 to %d", link.MaxMTU)
			}
		case "cidr":
			o.cidr, err = netip.ParsePrefix(val)
			if err != nil || !o.cidr.Addr().Is4() || o.cidr.Bits() > 25 || o.cidr.Masked() != o.cidr {
				err = fmt.Errorf("--cidr %q: want an IPv4 network address with a prefix of 25 bits or fewer, like 10.0.2.0/24", val)
			}
		case "disable-host-loopback", "no-host-loopback":
			o.noHostLoopback = true
		case "netns-type":
			if val != "pid" && val != "path" {
				err = fmt.Errorf("--netns-type %q: want pid or path (tapfd is not supported)", val)
			}
			o.netnsType = val
		case "userns-path":
			if _, serr := os.Stat(val); serr != nil {
				err = fmt.Errorf("userns path doesn't exist: %s", val)
			}
			o.usernsPath = val
		case "api-socket":
			o.apiSocket = val
		case "enable-ipv6":
			o.ipv6 = true
		case "enable-sandbox", "create-sandbox":
			o.sandbox = true
		case "enable-seccomp":
			o.seccomp = true
		case "outbound-addr":
			o.outbound4 = val
		case "outbound-addr6":
			o.outbound6 = val
		case "disable-dns":
			o.noDNS = true
		case "macaddress":
			o.mac, err = net.ParseMAC(val)
			if err != nil || len(o.mac) != 6 || o.mac[0]&1 != 0 {
				err = fmt.Errorf("--macaddress %q: want a unicast Ethernet address like 02:00:00:00:00:01", val)
			}
		case "target-type":
			if val != "netns" {
				err = fmt.Errorf("--target-type %q: only netns is supported", val)
			}
			o.targetType = val
		case "help":
			return errSlirpHelp
		case "version":
			return errSlirpVersion
		default:
			return fmt.Errorf("unrecognized option '--%s'", name)
		}
		return err
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			operands = append(operands, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			if needsValue[name] && !hasVal {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("option '--%s' requires an argument", name)
				}
				i++
				val = args[i]
			} else if !needsValue[name] && hasVal {
				return nil, fmt.Errorf("option '--%s' doesn't allow an argument", name)
			}
			if err := set(name, val); err != nil {
				return nil, err
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for j := 1; j < len(a); j++ {
				name, ok := short[a[j]]
				if !ok {
					return nil, fmt.Errorf("invalid option -- '%c'", a[j])
				}
				val := ""
				if needsValue[name] {
					if j+1 < len(a) {
						val = a[j+1:]
					} else if i+1 < len(args) {
						i++
						val = args[i]
					} else {
						return nil, fmt.Errorf("option requires an argument -- '%c'", a[j])
					}
					j = len(a)
				}
				if err := set(name, val); err != nil {
					return nil, err
				}
			}
		default:
			operands = append(operands, a)
		}
	}
	switch len(operands) {
	case 1:
		o.tap = "tap0"
	case 2:
		o.tap = operands[1]
	default:
		return nil, errors.New("want PID|PATH [TAPNAME]")
	}
	o.target = operands[0]
	if o.netnsType == "pid" {
		if pid, err := strconv.Atoi(o.target); err != nil || pid <= 0 {
			return nil, fmt.Errorf("PID %q is not a process ID (use --netns-type=path for a file)", o.target)
		}
	}
	if o.mac != nil && !o.configure {
		return nil, errors.New("--macaddress cannot be specified when --configure or -c is not specified")
	}
	if o.usernsPath != "" {
		o.warnings = append(o.warnings, "--userns-path is ignored: the namespace is joined with this process's privileges")
	}
	return o, nil
}

// plan returns the address plan slirp4netns uses for o.cidr: the gateway
// (and host loopback) at .2, DNS at .3, the namespace at .100; with -6,
// fd00::2, fd00::3 and fd00::100 on fd00::/64.
func (o *slirpOptions) plan() (stackAddrs, nsAddrs, dns []netip.Prefix) {
	base := o.cidr.Addr().As4()
	at := func(n byte) netip.Prefix {
		b := base
		b[3] += n
		return netip.PrefixFrom(netip.AddrFrom4(b), o.cidr.Bits())
	}
	stackAddrs = []netip.Prefix{at(2)}
	nsAddrs = []netip.Prefix{at(100)}
	dns = []netip.Prefix{at(3)}
	if o.ipv6 {
		stackAddrs = append(stackAddrs, netip.MustParsePrefix("fd00::2/64"))
		nsAddrs = append(nsAddrs, netip.MustParsePrefix("fd00::100/64"))
		dns = append(dns, netip.MustParsePrefix("fd00::3/64"))
	}
	if o.noDNS {
		dns = []netip.Prefix{}
	}
	return stackAddrs, nsAddrs, dns
}

// runSlirp is `tapstack slirp4netns`, and tapstack invoked as slirp4netns:
// slirp4netns's command line on a tapstack host. It exits 1 on bad
// arguments and on a namespace that cannot be joined, as slirp4netns.
func runSlirp(argv0 string, args []string, stdout, stderr io.Writer) int {
	o, err := parseSlirpArgs(args)
	switch {
	case errors.Is(err, errSlirpHelp):
		fmt.Fprintf(stdout, slirpUsage, argv0)
		return 0
	case errors.Is(err, errSlirpVersion):
		fmt.Fprintf(stdout, "slirp4netns version %s\ntapstack: %s\n", slirpVersion, version)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		fmt.Fprintf(stderr, slirpUsage, argv0)
		return 1
	}
	for _, w := range o.warnings {
		fmt.Fprintf(stderr, "WARNING: %s\n", w)
	}
	if err := serveSlirp(o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		return 1
	}
	return 0
}

// runSlirpCommand is runSlirp as a tapstack subcommand.
func runSlirpCommand(args []string, stdout, stderr io.Writer) error {
	if code := runSlirp("tapstack slirp4netns", args, stdout, stderr); code != 0 {
		return exitError{code}
	}
	return nil
}

// serveSlirp runs the host until the exit FD closes, a signal comes, or
// the namespace goes away.
func serveSlirp(o *slirpOptions, stdout, stderr io.Writer) error {
	if os.Geteuid() == 0 {
		if err := preflight(); err != nil {
			return err
		}
	} else if why := usernsMissing(); why != "" {
		return fmt.Errorf("cannot run without root: %s", why)
	}
	stackAddrs, nsAddrs, dns := o.plan()
	// The defaults of up and run (registering the flags sets them), then
	// what slirp4netns's command line says.
	var hf hostFlags
	var rf relayFlags
	defaults := flag.NewFlagSet("slirp4netns", flag.ContinueOnError)
	hf.register(defaults, "")
	rf.register(defaults)
	hf.tap, hf.mtu, hf.addrs, hf.nsAddrs = o.tap, o.mtu, stackAddrs, nsAddrs
	hf.noConfigure, hf.mac = !o.configure, o.mac
	if o.netnsType == "pid" {
		hf.pid, _ = strconv.Atoi(o.target)
	} else {
		hf.netnsPath = o.target
	}
	rf.hostLoopback, rf.dnsAddrs = !o.noHostLoopback, dns
	rf.outbound4, rf.outbound6 = o.outbound4, o.outbound6
	maxSocketsFor(&hf, &rf)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opener := slirpTAPConfig{childConfig: childConfig{TAP: o.tap, MTU: o.mtu, NSAddrs: nsAddrs, StackAddrs: stackAddrs, Offload: hf.offload},
		Configure: o.configure}
	if o.mac != nil {
		opener.MAC = o.mac.String()
	}
	s, err := startSessionWith(ctx, &hf, &rf, nil, stderr, slirpBuild(o, opener))
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(stdout, "tapstack slirp4netns: %s in the namespace of %s, MTU %d, network %s, gateway %s, DNS %s, namespace %s\n",
		o.tap, o.target, o.mtu, o.cidr, stackAddrs[0].Addr(), joinPrefixes(dns), nsAddrs[0].Addr())
	if o.apiSocket != "" {
		api, err := slirpapi.Listen(o.apiSocket, s.gw, nsAddrs[0].Addr())
		if err != nil {
			return err
		}
		defer api.Close()
	}
	exited := make(chan struct{})
	if o.exitFD >= 0 {
		go watchExitFD(ctx, o.exitFD, exited)
	}
	// A process's namespace ends with it; one opened by path has no
	// process to watch (nil: never ready).
	var gone <-chan string
	if hf.pid != 0 {
		wctx, wcancel := context.WithCancel(context.Background())
		defer wcancel()
		gone = watchGone(wctx, "", hf.pid)
	}
	// Restricted once set up, before it says it is ready: from here on
	// the daemon only moves packets and sockets.
	if o.sandbox {
		rep, err := sandbox.Restrict("/etc", "/run")
		if err != nil {
			return fmt.Errorf("--enable-sandbox: %w", err)
		}
		for _, l := range rep {
			fmt.Fprintf(stdout, "sandbox: %s\n", l)
		}
	}
	if o.seccomp {
		rep, err := sandbox.Seccomp()
		if err != nil {
			return fmt.Errorf("--enable-seccomp: %w", err)
		}
		for _, l := range rep {
			fmt.Fprintln(stdout, l)
		}
	}
	if o.readyFD >= 0 {
		f := os.NewFile(uintptr(o.readyFD), "ready-fd")
		if _, err := f.Write([]byte("1")); err != nil {
			f.Close()
			return fmt.Errorf("write to ready-fd %d: %w", o.readyFD, err)
		}
		f.Close()
	}
	select {
	case <-ctx.Done():
	case <-exited:
	case why := <-gone:
		s.log.Info(why + "; stopping")
		return nil
	case <-s.host.Link.Failed():
		return fmt.Errorf("the TAP %s is gone (%v)", o.tap, s.host.Link.Err())
	}
	s.drain(rf.drainTimeout)
	return nil
}

// watchExitFD closes exited when the other end of fd is closed (or it
// becomes readable), as slirp4netns's --exit-fd.
func watchExitFD(ctx context.Context, fd int, exited chan<- struct{}) {
	defer close(exited)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for ctx.Err() == nil {
		n, err := unix.Poll(fds, 250)
		if err == nil && n > 0 || err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
	}
}
