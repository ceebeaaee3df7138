// Package slirpcli is slirp4netns's command line (version 1.2): its
// options, parsed as its getopt_long parses them, with its defaults, its
// messages and its address plan. It knows nothing of how the daemon runs.
package slirpcli

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/tapstack/tapstack/internal/getopt"
	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack/nshost"
)

// Version is what -v reports as the slirp4netns version spoken: the
// command line and API of slirp4netns 1.2.
const Version = "1.2.0"

// LibVersion and ConfigVersionMax are the libslirp whose
// features tapstack's slirp4netns mode offers, as -v reports them.
const (
	LibVersion       = "4.7.0"
	ConfigVersionMax = 4
)

// parseCIDR parses --cidr as slirp4netns does, with its messages:
// an IPv4 network address (no host bits) with a prefix of 1 to 25 bits.
func parseCIDR(val string) (netip.Prefix, error) {
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

// Options are slirp4netns's options (its man page, version 1.2).
type Options struct {
	Configure      bool
	ExitFD         int
	ExitFDClosed   bool // the exit FD was not open when the daemon started
	ReadyFD        int
	MTU            int
	CIDR           netip.Prefix
	NoHostLoopback bool
	NetnsType      string
	UsernsPath     string
	APISocket      string
	IPv6           bool
	NoDNS          bool
	Outbound4      string
	Outbound6      string
	MAC            net.HardwareAddr
	Sandbox        bool
	Seccomp        bool
	TargetType     string
	Target         string // PID or PATH
	TAP            string
	Warnings       []string // options accepted that do not apply
}

// ErrHelp and ErrVersion end parsing successfully.
var (
	ErrHelp    = errors.New("help")
	ErrVersion = errors.New("version")
)

// Usage lists the options as slirp4netns --help does.
const Usage = `Usage: %s [OPTION]... PID|PATH [TAPNAME]
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
func Parse(args []string) (*Options, error) {
	o := &Options{ExitFD: -1, ReadyFD: -1, MTU: 1500, NetnsType: "pid", TargetType: "netns",
		CIDR: netip.MustParsePrefix(nshost.DefaultNetwork4)}
	needsValue := map[string]bool{"e": true, "r": true, "m": true, "a": true, "exit-fd": true, "ready-fd": true,
		"mtu": true, "api-socket": true, "cidr": true, "netns-type": true, "userns-path": true, "outbound-addr": true,
		"outbound-addr6": true, "macaddress": true, "target-type": true}
	short := map[byte]string{'c': "configure", 'e': "exit-fd", 'r': "ready-fd", 'm': "mtu", 'a': "api-socket",
		'6': "enable-ipv6", 'h': "help", 'v': "version"}
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
			o.Configure = true
		case "exit-fd":
			o.ExitFD, err = fd()
		case "ready-fd":
			o.ReadyFD, err = fd()
		case "mtu":
			o.MTU, err = strconv.Atoi(val)
			if err != nil || o.MTU < 1280 || o.MTU > link.MaxMTU {
				err = fmt.Errorf("MTU must be an integer from 1280 to %d", link.MaxMTU)
			}
		case "cidr":
			o.CIDR, err = parseCIDR(val)
		case "disable-host-loopback", "no-host-loopback":
			o.NoHostLoopback = true
		case "netns-type":
			if val != "pid" && val != "path" {
				err = fmt.Errorf("--netns-type %q: want pid or path (tapfd is not supported)", val)
			}
			o.NetnsType = val
		case "userns-path":
			if _, serr := os.Stat(val); serr != nil {
				err = fmt.Errorf("userns path doesn't exist: %s", val)
			}
			o.UsernsPath = val
		case "api-socket":
			o.APISocket = val
		case "enable-ipv6":
			o.IPv6 = true
		case "enable-sandbox", "create-sandbox":
			o.Sandbox = true
		case "enable-seccomp":
			o.Seccomp = true
		case "outbound-addr":
			o.Outbound4 = val
		case "outbound-addr6":
			o.Outbound6 = val
		case "disable-dns":
			o.NoDNS = true
		case "macaddress":
			o.MAC, err = net.ParseMAC(val)
			if err != nil || len(o.MAC) != 6 || o.MAC[0]&1 != 0 {
				err = fmt.Errorf("--macaddress %q: want a unicast Ethernet address like 02:00:00:00:00:01", val)
			}
		case "target-type":
			if val != "netns" {
				err = fmt.Errorf("--target-type %q: only netns is supported", val)
			}
			o.TargetType = val
		case "help":
			return ErrHelp
		case "version":
			return ErrVersion
		default:
			return fmt.Errorf("unrecognized option '--%s'", name)
		}
		return err
	}
	long := map[string]bool{"disable-host-loopback": false, "no-host-loopback": false, "enable-ipv6": false,
		"enable-sandbox": false, "create-sandbox": false, "enable-seccomp": false, "disable-dns": false, "configure": false,
		"help": false, "version": false}
	for name := range needsValue {
		if len(name) > 1 {
			long[name] = true
		}
	}
	operands, err := getopt.Spec{Long: long, Short: short}.Parse(args, set)
	if err != nil {
		return nil, err
	}
	switch {
	case len(operands) == 0:
		return nil, errors.New("want PID|PATH [TAPNAME]")
	case len(operands) == 1:
		o.TAP = "tap0"
	default:
		o.TAP = operands[1]
	}
	if len(operands) > 2 {
		// As slirp4netns: a warning, and the rest is ignored.
		o.Warnings = append(o.Warnings, "too many arguments")
	}
	o.Target = operands[0]
	if o.NetnsType == "pid" {
		if pid, err := strconv.Atoi(o.Target); err != nil || pid <= 0 {
			return nil, fmt.Errorf("PID %q is not a process ID (use --netns-type=path for a file)", o.Target)
		}
	}
	if o.MAC != nil && !o.Configure {
		return nil, errors.New("--macaddress cannot be specified when --configure or -c is not specified")
	}
	if o.UsernsPath != "" {
		o.Warnings = append(o.Warnings, "--userns-path is ignored: the namespace is joined with this process's privileges")
	}
	return o, nil
}

// plan returns the address plan slirp4netns uses for o.CIDR: the gateway
// (and host loopback) at .2, DNS at .3, the namespace at .100; with -6,
// also fd00::2, fd00::3 and fd00::100 on fd00::/64.
func (o *Options) Plan() nshost.Plan {
	var v6 netip.Prefix
	if o.IPv6 {
		v6 = netip.MustParsePrefix(nshost.DefaultNetwork6)
	}
	p, err := nshost.PlanFor(o.CIDR, v6)
	if err != nil {
		panic(err) // parseSlirpArgs checked the CIDR
	}
	if o.NoDNS {
		p.DNS = nil
	}
	return p
}
