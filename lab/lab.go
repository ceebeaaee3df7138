// Package lab builds networks of Linux network namespaces for integration
// tests and for the command line: hosts, routers and switches joined by
// kernel veth pairs or by tapstack wires (two TAP devices joined in
// userspace, each direction impaired by link.Impair, seeded and changeable
// while the network runs), with addresses, routes and names set
// automatically, a pcap per link, and a NAT uplink to the host through a
// tapstack daemon (its relay and DNS forwarder).
//
// It needs CAP_NET_ADMIN and CAP_SYS_ADMIN, /dev/net/tun and iproute2's ip.
// Everything a Network makes is removed by Close.
package lab

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/link"
)

var errNotYet = errors.New("lab: not yet")

// Options configures a Network; the zero value is the default.
type Options struct {
	// Name prefixes every namespace and interface the network makes:
	// at most 8 characters of [a-z0-9-]. "" picks "lab" and 5 random
	// hex digits.
	Name string
	// CaptureDir is where each link's pcap goes (file <link name>.pcap);
	// "" captures nothing.
	CaptureDir string
	// Seed seeds every wire's impairment (link i gets Seed+i); 0 picks a
	// random seed, which Network.Seed reports.
	Seed int64
	// Logf receives what the network does; nil is silent.
	Logf func(format string, args ...any)
}

// Network is a set of nodes and the links between them. Its methods are
// safe for concurrent use.
type Network struct{}

// New makes an empty network.
func New(opts Options) (*Network, error) { return nil, errNotYet }

// Name is the network's name, the prefix of everything it makes.
func (n *Network) Name() string { return "" }

// Seed is the seed of the wires' impairments.
func (n *Network) Seed() int64 { return 0 }

// Close stops the wires and daemons and deletes every namespace, device
// and file the network made. It is idempotent and works after a partial
// failure.
func (n *Network) Close() error { return errNotYet }

// Node returns the node called name, or nil.
func (n *Network) Node(name string) *Node { return nil }

// Nodes returns the nodes in the order they were added.
func (n *Network) Nodes() []*Node { return nil }

// Links returns the links in the order they were made.
func (n *Network) Links() []*Link { return nil }

// AddHost adds a host: a namespace (ip netns name <Name>-<name>) with its
// loopback up.
func (n *Network) AddHost(name string) (*Node, error) { return nil, errNotYet }

// AddRouter adds a host that forwards IPv4 and IPv6 between its links.
func (n *Network) AddRouter(name string) (*Node, error) { return nil, errNotYet }

// AddSwitch adds an L2 switch: a kernel bridge in a namespace of its own.
// Each Connect to it adds a port.
func (n *Network) AddSwitch(name string) (*Node, error) { return nil, errNotYet }

// NodeKind is what a node is.
type NodeKind int

// The kinds of node.
const (
	Host NodeKind = iota
	Router
	Switch
)

// String names the kind.
func (k NodeKind) String() string {
	switch k {
	case Host:
		return "host"
	case Router:
		return "router"
	case Switch:
		return "switch"
	}
	return "NodeKind(?)"
}

// Node is a host, a router or a switch of a Network.
type Node struct{}

// Name is the node's name within its network.
func (nd *Node) Name() string { return "" }

// Kind is what the node is.
func (nd *Node) Kind() NodeKind { return Host }

// NetNS is the node's `ip netns` name.
func (nd *Node) NetNS() string { return "" }

// Addr4 is the node's first IPv4 address, zero if it has none.
func (nd *Node) Addr4() netip.Addr { return netip.Addr{} }

// Addr6 is the node's first IPv6 address, zero if it has none.
func (nd *Node) Addr6() netip.Addr { return netip.Addr{} }

// Command returns a command that runs inside the node with `ip netns
// exec`, so that /etc/netns/<ns>/hosts and resolv.conf apply.
func (nd *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", nd.NetNS(), name}, args...)...)
}

// Run calls f on a locked OS thread inside the node's namespace; the
// thread is discarded afterwards.
func (nd *Node) Run(f func() error) error { return errNotYet }

// WaitPort waits until something listens on addr ("host:port") for
// network "tcp" or "udp" inside the node, or ctx ends.
func (nd *Node) WaitPort(ctx context.Context, network, addr string) error { return errNotYet }

// LinkKind is how a link carries frames.
type LinkKind int

// The kinds of link.
const (
	// Veth is a kernel veth pair.
	Veth LinkKind = iota
	// Wire is two TAP devices joined in userspace through link.Impair.
	Wire
)

// String names the kind.
func (k LinkKind) String() string {
	switch k {
	case Veth:
		return "veth"
	case Wire:
		return "wire"
	}
	return "LinkKind(?)"
}

// LinkOptions configures a link; the zero value is a veth with automatic
// addresses.
type LinkOptions struct {
	Kind LinkKind
	// Impair is the wire's impairment from the start, in
	// link.ParseImpairSpec's syntax ("loss=5%,delay=10ms"); Wire only.
	Impair string
	// MTU is the links' MTU (1500 if 0).
	MTU int
	// Subnet4 is the link's IPv4 subnet: zero takes 10.77.<k>.0/24 (k the
	// link's index) or, on a switch, the switch's subnet.
	Subnet4 netip.Prefix
	// Subnet6 is the link's IPv6 subnet: zero takes fd77:<k>::/64.
	Subnet6 netip.Prefix
	// NoIPv6 leaves the link without IPv6 addresses.
	NoIPv6 bool
	// Addrs gives nodes (by name) addresses of their own on this link,
	// instead of automatic ones.
	Addrs map[string][]netip.Prefix
}

// Connect joins a and b with a link.
func (n *Network) Connect(a, b *Node, opts LinkOptions) (*Link, error) { return nil, errNotYet }

// Link joins two nodes.
type Link struct{}

// Name is the link's name, <Name>-l<k>.
func (l *Link) Name() string { return "" }

// Kind is how the link carries frames.
func (l *Link) Kind() LinkKind { return Veth }

// Iface is the link's interface name inside nd, "" if nd is not on it.
func (l *Link) Iface(nd *Node) string { return "" }

// Addrs are nd's addresses on the link.
func (l *Link) Addrs(nd *Node) []netip.Prefix { return nil }

// Impair changes a wire's impairment while it runs ("" for none).
func (l *Link) Impair(spec string) error { return errNotYet }

// Stats counts what a wire did each way; zero for a veth.
func (l *Link) Stats() (aToB, bToA link.ImpairStats) { return }

// CapturePath is the link's pcap file, "" when not capturing.
func (l *Link) CapturePath() string { return "" }

// UplinkOptions configures an uplink.
type UplinkOptions struct {
	// Impair is the impairment of the uplink's wire.
	Impair string
	// ResolvConf names the DNS forwarder's upstream resolvers ("" for the
	// host's /etc/resolv.conf).
	ResolvConf string
	// HostLoopback maps the host's loopback as slirp4netns does.
	HostLoopback bool
	// Daemon holds further daemon settings; zero fields are defaults.
	Daemon daemon.Config
}

// Uplink is a node's NAT to the host through a tapstack daemon.
type Uplink struct{}

// AddUplink gives node a NAT to the host through a tapstack daemon
// running in this process (relay and DNS).
func (n *Network) AddUplink(node *Node, opts UplinkOptions) (*Uplink, error) {
	return nil, errNotYet
}

// Daemon is the uplink's running daemon.
func (u *Uplink) Daemon() *daemon.Daemon { return nil }
