// Package pastacli is pasta's command line as its callers use it
// (rootlesskit 2's pasta driver, podman 5's): its options, parsed as its
// getopt_long parses them (long options as --opt=value or --opt value,
// short ones grouped, options after the PID), with its messages, and its
// port specifications. An option tapstack does not support is an error
// in getopt's words ("unrecognized option '--X'"), which podman reads.
// DaemonConfig turns the options into a daemon.Config; how the daemon
// runs (in the background, handed a TAP) is the command's.
package pastacli

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tapstack/tapstack/internal/getopt"
)

// Version is what --version prints after "pasta ".
const Version = "2024_12_11.tapstack"

// Options are pasta's options.
type Options struct {
	Foreground, Quiet, Stderr, Debug bool
	PIDFile                          string
	LogFile                          string // -l: the daemon's log (in the background: none)
	// The namespace: PID (with its user namespace unless UsernsPath), or
	// NetnsPath (--netns; a NAME is /run/netns/NAME), with UsernsPath if
	// given (--netns alone joins no user namespace).
	PID         int
	NetnsPath   string
	UsernsPath  string
	NetnsOnly   bool
	NoNetnsQuit bool

	Ifname    string // -I/--ns-ifname ("": tap0)
	ConfigNet bool
	MTU       int // 0: 65520
	// Addr4/Addr6 (-a), Prefix4 (-n; 0: from the address), Gateway4/6
	// (-g).
	Addr4, Addr6                  netip.Addr
	Prefix4                       int
	Gateway4, Gateway6            netip.Addr
	Interface                     string       // -i: the host interface relayed flows leave from
	Outbound                      []netip.Addr // -o
	DNS                           []netip.Addr // -D (nil: the DNS forward address)
	NoDNS                         bool         // -D none
	DNSForward                    []netip.Addr // --dns-forward
	NoDHCP, NoRA, NoNDP, NoDHCPv6 bool
	IPv4Only, IPv6Only            bool
	// Gateway mapping: NoMapGW (--no-map-gw, --map-host-loopback none);
	// MapHostLoopback (an address that stands for the host's loopback;
	// invalid: the gateway); MapGuestAddr (one that stands for the host).
	NoMapGW         bool
	MapHostLoopback []netip.Addr
	MapGuestAddr    []netip.Addr
	// Port forwarding, each direction: -t, -u (host → namespace), -T,
	// -U (namespace → host).
	TCP, UDP, TCPNS, UDPNS Ports
}

// Ports is one direction's -t/-u/-T/-U: pasta's default is auto.
type Ports struct {
	Set  bool   // given on the command line
	Mode string // "auto", "none" or "" (explicit specs)
	// Specs are explicit forwards (and exclusions).
	Specs []PortSpec
}

// PortSpec is one item of a port specification:
// [ADDR[%IF]/]FIRST[-LAST][:TFIRST[-TLAST]], or ~FIRST[-LAST].
type PortSpec struct {
	Addr        netip.Addr // host address to bind (invalid: any)
	Iface       string     // %IF: bind to this device
	First, Last uint16
	Target      uint16 // the namespace's first port (First when not mapped)
	Exclude     bool
}

// ErrHelp and ErrVersion end parsing successfully.
var (
	ErrHelp    = errors.New("help")
	ErrVersion = errors.New("version")
)

// ErrUnsupported marks an option of pasta's that tapstack does not
// support; its message names it.
var ErrUnsupported = errors.New("not supported by tapstack")

// Usage lists the options tapstack's pasta mode takes.
const Usage = `Usage: pasta [OPTION]... PID
       pasta [OPTION]... --netns [PATH|NAME]
User-mode networking for a network namespace, by tapstack (pasta's command
line as podman and rootlesskit use it).

  -f, --foreground	Don't run in background
  -q, --quiet		Don't print informational messages
  -e, --stderr		Log to stderr too
  -d, --debug		Be verbose
  -P, --pid FILE	Write own PID to the given file
  -l, --log-file PATH	Log (only) to given file
  -I, --ns-ifname NAME	namespace interface name (default tap0)
  --config-net		Configure tap interface in namespace
  -m, --mtu MTU		MTU (default 65520)
  -a, --address ADDR	Assign IPv4 or IPv6 address ADDR
  -n, --netmask MASK	Assign IPv4 MASK, dot-decimal or bits
  -g, --gateway ADDR	Pass IPv4 or IPv6 address as gateway
  -i, --interface NAME	Host interface relayed flows leave from
  -o, --outbound ADDR	Bind to address as outbound source
  -D, --dns ADDR	DNS address offered to the namespace (none: none)
  --dns-forward ADDR	Forward DNS queries sent to ADDR
  --no-dhcp, --no-ra, --no-ndp, --no-dhcpv6	Disable a responder
  --map-host-loopback ADDR	ADDR stands for the host's loopback (none: no mapping)
  --map-gw, --no-map-gw	Map the gateway to the host's loopback (default), or not
  --map-guest-addr ADDR	ADDR stands for the host
  -4, --ipv4-only	Enable IPv4 operation only
  -6, --ipv6-only	Enable IPv6 operation only
  -t, --tcp-ports SPEC	TCP port forwarding to namespace
  -u, --udp-ports SPEC	UDP port forwarding to namespace
  -T, --tcp-ns SPEC	TCP port forwarding to init namespace
  -U, --udp-ns SPEC	UDP port forwarding to init namespace
		SPEC: none, auto, or [ADDR[%IF]/]PORT[-PORT][:PORT[-PORT]],... and ~PORT[-PORT] exclusions
  --userns NSPATH	Target user namespace to join
  --netns PATH|NAME	Target network namespace to join
  --netns-only		Don't join existing user namespace
  --no-netns-quit	Don't quit if filesystem-bound target
  -h, --help		Display this help message and exit
  --version		Show version and exit
`

// long options: name → takes a value.
var long = map[string]bool{
	"foreground": false, "quiet": false, "stderr": false, "debug": false, "trace": false, "help": false, "version": false,
	"pid": true, "log-file": true, "ns-ifname": true, "config-net": false, "mtu": true, "address": true, "netmask": true, "gateway": true,
	"interface": true, "outbound": true, "dns": true, "dns-forward": true, "no-dhcp": false, "no-ra": false,
	"no-ndp": false, "no-dhcpv6": false, "map-host-loopback": true, "map-gw": false, "no-map-gw": false,
	"map-guest-addr": true, "ipv4-only": false, "ipv6-only": false, "tcp-ports": true, "udp-ports": true,
	"tcp-ns": true, "udp-ns": true, "userns": true, "netns": true, "netns-only": false, "no-netns-quit": false,
}

// short options: letter → long name.
var short = map[byte]string{
	'f': "foreground", 'q': "quiet", 'e': "stderr", 'd': "debug", 'h': "help", 'P': "pid", 'l': "log-file", 'I': "ns-ifname",
	'm': "mtu", 'a': "address", 'n': "netmask", 'g': "gateway", 'i': "interface", 'o': "outbound", 'D': "dns",
	'4': "ipv4-only", '6': "ipv6-only", 't': "tcp-ports", 'u': "udp-ports", 'T': "tcp-ns", 'U': "udp-ns",
}

// unsupported are options of pasta's that tapstack knows and refuses,
// with the reason.
var unsupported = map[string]string{
	"host-lo-to-ns-lo": "connections from the host's loopback arrive from the gateway address",
	"runas":            "the daemon keeps the user it was started as",
	"pcap":             "capture with tapstack capture",
	"fd":               "pasta mode opens its own TAP",
	"mac-addr":         "the stack's MAC is its own",
	"ns-mac-addr":      "the namespace's MAC is the kernel's",
	"search":           "no search domains are offered",
	"dhcp-dns":         "DNS is always offered",
	"dhcp-search":      "no search domains are offered",
	"no-tcp":           "TCP is always relayed",
	"no-udp":           "UDP is always relayed",
	"no-icmp":          "ICMP echo is always relayed",
	"outbound-if4":     "use -i",
	"outbound-if6":     "use -i",
	"dns-host":         "DNS goes to the host's resolvers",
	"no-splice":        "",
	"freebind":         "",
	"trace":            "",
}

// Parse parses pasta's arguments.
func Parse(args []string) (*Options, error) {
	o := &Options{}
	seen := map[string]bool{}
	set := func(name, val string) error {
		if why, ok := unsupported[name]; ok && name != "trace" {
			if why != "" {
				why = ": " + why
			}
			return fmt.Errorf("option '--%s' is %w%s", name, ErrUnsupported, why)
		}
		if seen[name] && !strings.HasSuffix(name, "-ports") && !strings.HasSuffix(name, "-ns") && name != "address" &&
			name != "gateway" && name != "outbound" && name != "dns" && name != "dns-forward" && name != "map-guest-addr" && name != "map-host-loopback" {
			return fmt.Errorf("multiple --%s options given", name)
		}
		seen[name] = true
		switch name {
		case "foreground":
			o.Foreground = true
		case "quiet":
			o.Quiet = true
		case "stderr":
			o.Stderr = true
		case "debug", "trace":
			o.Debug = true
		case "help":
			return ErrHelp
		case "version":
			return ErrVersion
		case "pid":
			o.PIDFile = val
		case "log-file":
			o.LogFile = val
		case "ns-ifname":
			if val == "" || len(val) > 15 || strings.ContainsAny(val, "/ ") {
				return fmt.Errorf("invalid interface name: %s", val)
			}
			o.Ifname = val
		case "config-net":
			o.ConfigNet = true
		case "mtu":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1280 || n > 65520 {
				return fmt.Errorf("invalid MTU: %s (tapstack takes 1280 to 65520)", val)
			}
			o.MTU = n
		case "address":
			a, err := unicast(val)
			if err != nil {
				return err
			}
			if a.Is4() {
				o.Addr4 = a
			} else {
				o.Addr6 = a
			}
		case "netmask":
			n, err := netmask(val)
			if err != nil {
				return err
			}
			o.Prefix4 = n
		case "gateway":
			a, err := unicast(val)
			if err != nil {
				return err
			}
			if a.Is4() {
				o.Gateway4 = a
			} else {
				o.Gateway6 = a
			}
		case "interface":
			o.Interface = val
		case "outbound":
			a, err := unicast(val)
			if err != nil {
				return err
			}
			o.Outbound = append(o.Outbound, a)
		case "dns":
			if val == "none" {
				o.NoDNS = true
				return nil
			}
			a, err := unicast(val)
			if err != nil {
				return fmt.Errorf("cannot use DNS address %s", val)
			}
			o.DNS = append(o.DNS, a)
		case "dns-forward":
			a, err := unicast(val)
			if err != nil {
				return fmt.Errorf("invalid DNS forwarding address: %s", val)
			}
			o.DNSForward = append(o.DNSForward, a)
		case "no-dhcp":
			o.NoDHCP = true
		case "no-ra":
			o.NoRA = true
		case "no-ndp":
			o.NoNDP = true
		case "no-dhcpv6":
			o.NoDHCPv6 = true
		case "map-gw":
			// Not an option of pasta's (podman strips it): the default.
		case "no-map-gw":
			o.NoMapGW = true
		case "map-host-loopback":
			if val == "none" {
				o.NoMapGW = true
				return nil
			}
			a, err := unicast(val)
			if err != nil {
				return fmt.Errorf("invalid address to remap to host loopback: %s", val)
			}
			o.MapHostLoopback = append(o.MapHostLoopback, a)
		case "map-guest-addr":
			if val == "none" {
				o.MapGuestAddr = nil
				return nil
			}
			a, err := unicast(val)
			if err != nil {
				return fmt.Errorf("invalid address to remap to host: %s", val)
			}
			o.MapGuestAddr = append(o.MapGuestAddr, a)
		case "ipv4-only":
			o.IPv4Only = true
		case "ipv6-only":
			o.IPv6Only = true
		case "tcp-ports", "udp-ports", "tcp-ns", "udp-ns":
			p := map[string]*Ports{"tcp-ports": &o.TCP, "udp-ports": &o.UDP, "tcp-ns": &o.TCPNS, "udp-ns": &o.UDPNS}[name]
			return p.add(val, name)
		case "userns":
			o.UsernsPath = val
		case "netns":
			if !strings.Contains(val, "/") {
				val = "/run/netns/" + val
			}
			o.NetnsPath = val
		case "netns-only":
			o.NetnsOnly = true
		case "no-netns-quit":
			o.NoNetnsQuit = true
		}
		return nil
	}
	spec := getopt.Spec{Long: map[string]bool{}, Short: short}
	for name, needs := range long {
		spec.Long[name] = needs
	}
	for name := range unsupported {
		spec.Long[name] = false // refused by set, with the reason
	}
	operands, err := spec.Parse(args, set)
	if err != nil {
		return nil, err
	}
	switch {
	case o.IPv4Only && o.IPv6Only:
		return nil, errors.New("options ipv4-only and ipv6-only are mutually exclusive")
	case len(operands) == 0 && o.NetnsPath == "":
		return nil, fmt.Errorf("a command is %w: give the PID of a process whose namespace to serve, or --netns (tapstack run runs a command)", ErrUnsupported)
	case len(operands) > 0 && o.NetnsPath != "":
		return nil, errors.New("both --netns and PID or command given")
	case len(operands) > 1:
		return nil, fmt.Errorf("a command is %w: give the PID of a process whose namespace to serve, or --netns (tapstack run runs a command)", ErrUnsupported)
	case len(operands) == 1:
		pid, err := strconv.Atoi(operands[0])
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("a command is %w: give the PID of a process whose namespace to serve, or --netns (tapstack run runs a command)", ErrUnsupported)
		}
		o.PID = pid
	}
	if o.Prefix4 != 0 && !o.Addr4.IsValid() {
		return nil, errors.New("--netmask needs an IPv4 --address")
	}
	return o, nil
}

// add parses one -t/-u/-T/-U value into p.
func (p *Ports) add(val, name string) error {
	conflict := func() error {
		return fmt.Errorf("port forwarding mode '%s' conflicts with previous mode (--%s)", val, name)
	}
	switch val {
	case "none", "auto":
		if p.Set {
			return conflict()
		}
		p.Set, p.Mode = true, val
		return nil
	case "all":
		return fmt.Errorf("'all' port forwarding is only allowed for passt")
	}
	if p.Set && p.Mode != "" {
		return errors.New("specific ports cannot be specified together with all/none/auto")
	}
	p.Set = true
	specs, err := ParsePortSpec(val, strings.HasSuffix(name, "-ports"))
	if err != nil {
		return err
	}
	p.Specs = append(p.Specs, specs...)
	return nil
}

// ParsePortSpec parses [ADDR[%IF]/]ITEM,... where ITEM is
// FIRST[-LAST][:TFIRST[-TLAST]] or ~FIRST[-LAST]; an address is allowed
// when withAddr (the -t and -u directions).
func ParsePortSpec(spec string, withAddr bool) ([]PortSpec, error) {
	bad := func() ([]PortSpec, error) { return nil, fmt.Errorf("invalid port specifier %s", spec) }
	var addr netip.Addr
	var iface string
	rest := spec
	if i := strings.LastIndex(spec, "/"); i >= 0 {
		if !withAddr {
			return bad()
		}
		a := spec[:i]
		rest = spec[i+1:]
		a, iface, _ = strings.Cut(a, "%")
		a = strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
		if a != "" {
			var err error
			if addr, err = netip.ParseAddr(a); err != nil {
				return bad()
			}
		}
	}
	rng := func(s string) (uint16, uint16, bool) {
		f, l, isRange := strings.Cut(s, "-")
		first, err := strconv.Atoi(f)
		if err != nil || first < 1 || first > 65535 {
			return 0, 0, false
		}
		last := first
		if isRange {
			if last, err = strconv.Atoi(l); err != nil || last < first || last > 65535 {
				return 0, 0, false
			}
		}
		return uint16(first), uint16(last), true
	}
	var out []PortSpec
	for _, item := range strings.Split(rest, ",") {
		ps := PortSpec{Addr: addr, Iface: iface}
		if strings.HasPrefix(item, "~") {
			ps.Exclude = true
			item = item[1:]
		}
		src, dst, mapped := strings.Cut(item, ":")
		var ok bool
		if ps.First, ps.Last, ok = rng(src); !ok {
			return bad()
		}
		ps.Target = ps.First
		if mapped {
			if ps.Exclude {
				return bad()
			}
			tf, tl, ok := rng(dst)
			if !ok || tl-tf != ps.Last-ps.First {
				return bad()
			}
			ps.Target = tf
		}
		out = append(out, ps)
	}
	return out, nil
}

// unicast parses an address that may be assigned or routed to.
func unicast(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() ||
		a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, fmt.Errorf("invalid address: %s", s)
	}
	return a.Unmap(), nil
}

// netmask parses -n: bits or a dotted-decimal mask.
func netmask(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 1 && n <= 32 {
		return n, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return 0, fmt.Errorf("invalid netmask: %s", s)
	}
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n := 0
	for v&(1<<31) != 0 {
		n++
		v <<= 1
	}
	if v != 0 || n == 0 {
		return 0, fmt.Errorf("invalid netmask: %s", s)
	}
	return n, nil
}
