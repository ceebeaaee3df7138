package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/internal/handoff"
	"github.com/tapstack/tapstack/internal/sandbox"
	"github.com/tapstack/tapstack/internal/slirpapi"
	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/stack/nshost"
)

// slirpVersion is what -v reports as the slirp4netns version spoken: the
// command line and API of slirp4netns 1.2.
const slirpVersion = "1.2.0"

// slirpLibVersion and slirpConfigVersionMax are the libslirp whose
// features tapstack's slirp4netns mode offers, as -v reports them.
const (
	slirpLibVersion       = "4.7.0"
	slirpConfigVersionMax = 4
)

// parseSlirpCIDR parses --cidr as slirp4netns does, with its messages:
// an IPv4 network address (no host bits) with a prefix of 1 to 25 bits.
func parseSlirpCIDR(val string) (netip.Prefix, error) {
	addr, bits, ok := strings.Cut(val, "/")
	if !ok || len(bits) < 1 || len(bits) > 2 || strings.Count(addr, ".") != 3 {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR: %s", val)
	}
	n, err := strconv.Atoi(bits)
	if err != nil || n < 0 {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR: %s", val)
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("invalid network address: %s", addr)
	}
	if n < 1 || n > 25 {
		return netip.Prefix{}, fmt.Errorf("prefix length needs to be 1-25")
	}
	p := netip.PrefixFrom(a, n)
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("CIDR needs to be a network address like %s, not like %s", p.Masked(), p)
	}
	return p, nil
}

// slirpOptions are slirp4netns's options (its man page, version 1.2).
type slirpOptions struct {
	configure      bool
	exitFD         int
	exitFDClosed   bool // the exit FD was not open when the daemon started
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
		cidr: netip.MustParsePrefix(nshost.DefaultNetwork4)}
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
			o.cidr, err = parseSlirpCIDR(val)
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
	switch {
	case len(operands) == 0:
		return nil, errors.New("want PID|PATH [TAPNAME]")
	case len(operands) == 1:
		o.tap = "tap0"
	default:
		o.tap = operands[1]
	}
	if len(operands) > 2 {
		// As slirp4netns: a warning, and the rest is ignored.
		o.warnings = append(o.warnings, "too many arguments")
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
// also fd00::2, fd00::3 and fd00::100 on fd00::/64.
func (o *slirpOptions) plan() nshost.Plan {
	var v6 netip.Prefix
	if o.ipv6 {
		v6 = netip.MustParsePrefix(nshost.DefaultNetwork6)
	}
	p, err := nshost.PlanFor(o.cidr, v6)
	if err != nil {
		panic(err) // parseSlirpArgs checked the CIDR
	}
	if o.noDNS {
		p.DNS = nil
	}
	return p
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
		// The lines slirp4netns prints, which its users parse (its test
		// suite reads SLIRP_CONFIG_VERSION_MAX to decide what to test):
		// tapstack does what libslirp 4.7's configuration version 4
		// offers (outbound addresses, --disable-dns, the MAC address).
		fmt.Fprintf(stdout, "slirp4netns version %s\ncommit: tapstack-%s\nlibslirp: %s\nSLIRP_CONFIG_VERSION_MAX: %d\ntapstack: %s\n",
			slirpVersion, version, slirpLibVersion, slirpConfigVersionMax, version)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		fmt.Fprintf(stderr, slirpUsage, argv0)
		return 1
	}
	// Whether the exit FD is open is known only now: once the daemon
	// runs, its own descriptors may take a closed one's number. The Go
	// runtime's poller may have taken it already (an epoll and an
	// eventfd, made before main): neither ever hangs up, so no caller
	// passed one to be watched.
	if o.exitFD >= 0 {
		l, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", o.exitFD))
		if err != nil || l == "anon_inode:[eventpoll]" || l == "anon_inode:[eventfd]" {
			o.exitFDClosed = true
		}
	}
	if o.sandbox && os.Getenv(sandbox.PrivateMountsEnv) == "" {
		err := execSandboxed(o, args) // returns only on failure
		fmt.Fprintf(stderr, "%s: --enable-sandbox: %v\n", argv0, err)
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

// serveSlirp runs the daemon until the exit FD closes, a signal comes,
// or the namespace goes away.
func serveSlirp(o *slirpOptions, stdout, stderr io.Writer) error {
	if os.Geteuid() == 0 {
		if err := preflight(); err != nil {
			return err
		}
	} else if why := usernsMissing(); why != "" {
		return fmt.Errorf("cannot run without root: %s", why)
	}
	plan := o.plan()
	log, _ := daemon.NewLogger(stderr, "text", "", false)
	cfg := daemon.Config{TAP: o.tap, MTU: o.mtu, Plan: plan, NoConfigure: !o.configure, MAC: o.mac, Log: log,
		Relay: relay.Config{HostLoopback: !o.noHostLoopback}}
	if o.noDNS {
		// As slirp4netns: nothing answers at the DNS address, and what is
		// sent there goes nowhere.
		full := *o
		full.noDNS = false
		cfg.Relay.Silent = nshost.Addrs(full.plan().DNS)
	}
	if o.netnsType == "pid" {
		cfg.PID, _ = strconv.Atoi(o.target)
	} else {
		cfg.NetnsPath = o.target
	}
	var err error
	if cfg.Relay.OutboundAddrs, err = outboundAddrs(o.outbound4, o.outbound6); err != nil {
		return err
	}
	setProcs(0)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Geteuid() != 0 {
		// Without root the helper opens the TAP in the target's
		// namespaces, user namespace included, and hands it over.
		hc := handoff.Config{TAP: o.tap, MTU: o.mtu, Offload: true, Configure: o.configure,
			NSAddrs: plan.NS, StackAddrs: plan.Stack}
		if o.mac != nil {
			hc.MAC = o.mac.String()
		}
		tap, err := openTAPInTarget(o, hc)
		if err != nil {
			return err
		}
		cfg.Devices = tap.Devices()
	}
	// The API socket exists before the TAP does: clients talk to it as
	// soon as they see the TAP.
	var api *slirpapi.Server
	if o.apiSocket != "" {
		var err error
		if api, err = slirpapi.Bind(o.apiSocket); err != nil {
			return err
		}
		defer api.Close()
	}
	d, err := daemon.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer d.Close()
	fmt.Fprintf(stdout, "tapstack slirp4netns: %s in the namespace of %s, MTU %d, network %s, gateway %s, DNS %s, namespace %s\n",
		o.tap, o.target, o.mtu, o.cidr, plan.Stack[0].Addr(), joinPrefixes(plan.DNS), plan.NS[0].Addr())
	if api != nil {
		api.Serve(d.Relay(), plan.NS[0].Addr())
	}
	if o.exitFD >= 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		if o.exitFDClosed {
			cancel() // closed before it was watched: the end, once up
		} else {
			go watchExitFD(ctx, o.exitFD, cancel)
		}
	}
	// Restricted once set up, before it says it is ready: from here on
	// the daemon only moves packets and sockets.
	if o.sandbox {
		root, err := sandbox.PivotRoot("/etc", "/run")
		if err != nil {
			return fmt.Errorf("--enable-sandbox: %w", err)
		}
		rep, err := sandbox.Restrict("/etc", "/run")
		if err != nil {
			return fmt.Errorf("--enable-sandbox: %w", err)
		}
		for _, l := range append(root, rep...) {
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
	return d.Wait(ctx)
}

// watchExitFD calls exited when the other end of fd is closed (hang-up,
// error, or no such descriptor), as slirp4netns's --exit-fd; data to
// read does not end it.
func watchExitFD(ctx context.Context, fd int, exited func()) {
	defer exited()
	fds := []unix.PollFd{{Fd: int32(fd)}} // POLLHUP, POLLERR and POLLNVAL are always reported
	for ctx.Err() == nil {
		n, err := unix.Poll(fds, 250)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			return
		}
		if n > 0 {
			// Readable but not closed: wait without spinning.
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// execSandboxed starts this slirp4netns again in the same process (exec
// keeps the PID its caller knows and the descriptors it passed), in a
// mount namespace of its own and, without root, as root of the target's
// user namespace, as slirp4netns's sandbox does: the pivot into a tmpfs
// root and the capability it keeps (CAP_NET_BIND_SERVICE) need both.
func execSandboxed(o *slirpOptions, args []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return errors.New("needs util-linux's unshare on PATH for a mount namespace of its own")
	}
	argv := append([]string{unshare, "--mount", "--propagation", "slave", "--", self, "slirp4netns"}, args...)
	if os.Geteuid() != 0 {
		userns := o.usernsPath
		if userns == "" && o.netnsType == "pid" {
			userns = "/proc/" + o.target + "/ns/user"
		}
		if userns == "" {
			return errors.New("--netns-type=path without root needs --userns-path (the user namespace that owns the network namespace)")
		}
		nsenter, err := exec.LookPath("nsenter")
		if err != nil {
			return errors.New("without root, needs util-linux's nsenter on PATH to enter the target's user namespace")
		}
		argv = append([]string{nsenter, "--preserve-credentials", "--user=" + userns, "--"}, argv...)
	}
	return syscall.Exec(argv[0], argv, append(os.Environ(), sandbox.PrivateMountsEnv+"=1"))
}

// slirpTAPCmd is the hidden subcommand that opens the TAP inside the
// target's user and network namespaces, started there by nsenter, for a
// slirp4netns run without root.
const slirpTAPCmd = "__slirp-tap"

// nsenterArgs are nsenter's arguments to enter o's target namespaces,
// user namespace included. The credentials are kept: this user is root of
// the target's user namespace (rootless podman and rootlesskit map it to
// 0), so the opener keeps its capabilities there, and such namespaces
// often deny setgroups, which nsenter would otherwise call.
func (o *slirpOptions) nsenterArgs() ([]string, error) {
	args := []string{"--preserve-credentials"}
	if o.netnsType == "pid" {
		args = append(args, "--target", o.target, "--net")
		if o.usernsPath == "" {
			args = append(args, "--user")
		}
	} else {
		args = append(args, "--net="+o.target)
		if o.usernsPath == "" {
			return nil, errors.New("--netns-type=path without root needs --userns-path (the user namespace that owns the network namespace)")
		}
	}
	if o.usernsPath != "" {
		args = append(args, "--user="+o.usernsPath)
	}
	return args, nil
}

// openTAPInTarget runs the helper in the target's namespaces and returns
// the TAP it hands back.
func openTAPInTarget(o *slirpOptions, cfg handoff.Config) (*link.TAP, error) {
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, errors.New("without root, needs util-linux's nsenter on PATH to enter the target's user namespace")
	}
	nsArgs, err := o.nsenterArgs()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(nsenter, append(nsArgs, self, slirpTAPCmd, cfg.Encode())...)
	cmd.Stderr = os.Stderr
	p, err := handoff.Start(cmd, cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot join the namespace of %s: %w", o.target, err)
	}
	p.Close()
	_ = cmd.Wait() // the helper exits once it handed the TAP over
	return p.TAP, nil
}

// runSlirpTAP is the helper: inside the target's namespaces it opens the
// TAP (configured with -c), hands it to the parent, and exits.
func runSlirpTAP(args []string) error {
	if len(args) != 1 {
		return errors.New("internal: bad opener arguments")
	}
	cfg, err := handoff.Decode(args[0])
	if err != nil {
		return err
	}
	tap, err := handoff.Open(cfg)
	if err != nil {
		return err
	}
	return tap.Close()
}
