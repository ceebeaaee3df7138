// Package lab builds networks of Linux network namespaces for integration
// tests and for the command line (`tapstack lab up`): hosts, routers and
// switches joined by kernel veth pairs or by tapstack wires (two TAP
// devices joined in userspace, both directions through link.Impair,
// seeded and changeable while the network runs), with IPv4 and IPv6
// addresses, static routes and /etc/hosts names set automatically, a pcap
// per link, and a NAT uplink to the host through a tapstack daemon (its
// relay and DNS forwarder) running in this process.
//
// Start at New, then AddHost, AddRouter, AddSwitch, Connect and AddUplink;
// Close removes everything the network made. After every change each node
// has addresses on each of its links (10.77.<k>.0/24 and fd77:<k>::/64
// unless told otherwise), routes to every subnet of the network along the
// shortest path through routers, and a hosts file naming every node (as
// `ip netns exec` shows it: /etc/netns/<ns>/hosts). Node.Command runs a
// program inside a node; Node.Run runs Go code there.
//
// It needs CAP_NET_ADMIN and CAP_SYS_ADMIN, /dev/net/tun and iproute2's
// ip; nft for the masquerading of an uplink shared by several nodes. It
// knows nothing of testing: tests/nstest wraps it for tests (NewNetwork).
package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vnl "github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/stack/netns"
)

// Options configures a Network; the zero value is the default.
type Options struct {
	// Name prefixes every namespace and interface the network makes:
	// at most 8 characters of [a-z0-9-]. "" picks "lab" and 5 random
	// hex digits.
	Name string
	// CaptureDir is where each link's pcap goes (file <link name>.pcap,
	// made if missing); "" captures nothing.
	CaptureDir string
	// Seed seeds every wire's impairment (link k gets Seed+k); 0 picks a
	// random seed, which Network.Seed reports so that a run can be
	// replayed.
	Seed int64
	// Logf receives what the network does; nil is silent.
	Logf func(format string, args ...any)
}

// MaxNameLen is the longest Options.Name.
const MaxNameLen = 8

// etcNetns is where `ip netns exec` finds a namespace's own /etc files.
const etcNetns = "/etc/netns"

var (
	labNameRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	labNodeRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	errClosed  = errors.New("lab: the network is closed")
	maxNodeLen = 40
	// failHook, set by tests, makes AddHost and Connect fail half-way
	// (stage "node": the namespace made; "link": the devices made).
	failHook func(stage string) error
)

// Network is a set of nodes and the links between them. Its methods are
// safe for concurrent use.
type Network struct {
	name string
	seed int64
	opts Options

	mu       sync.Mutex
	closed   bool              // protected by mu
	nodes    []*Node           // protected by mu
	byName   map[string]*Node  // protected by mu
	links    []*Link           // protected by mu
	segs     []*segment        // protected by mu: the L2 segments, one per plain link and one per switch
	uplinks  []*Uplink         // protected by mu
	files    []string          // protected by mu: files to remove on Close
	nextLink int               // protected by mu
	routed   map[*Node][]route // protected by mu: the routes last installed
	closeErr error             // protected by mu
}

// New makes an empty network. It makes nothing on the system but
// opts.CaptureDir.
func New(opts Options) (*Network, error) {
	if opts.Name == "" {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		opts.Name = "lab" + hex.EncodeToString(b[:])[:5]
	}
	if len(opts.Name) > MaxNameLen || !labNameRE.MatchString(opts.Name) {
		return nil, fmt.Errorf("lab: name %q: want 1 to %d characters of a-z, 0-9 and -", opts.Name, MaxNameLen)
	}
	if opts.Seed == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		// Positive and odd: never 0, and small enough to add link indices to.
		opts.Seed = int64(binary.LittleEndian.Uint64(b[:])>>2 | 1)
	}
	if opts.CaptureDir != "" {
		if err := os.MkdirAll(opts.CaptureDir, 0o755); err != nil {
			return nil, fmt.Errorf("lab: capture directory: %w", err)
		}
	}
	n := &Network{name: opts.Name, seed: opts.Seed, opts: opts, byName: map[string]*Node{}, routed: map[*Node][]route{}}
	return n, nil
}

// Name is the network's name, the prefix of everything it makes.
func (n *Network) Name() string { return n.name }

// Seed is the seed of the wires' impairments: link k's is Seed+k.
func (n *Network) Seed() int64 { return n.seed }

func (n *Network) logf(format string, args ...any) {
	if n.opts.Logf != nil {
		n.opts.Logf("lab %s: "+format, append([]any{n.name}, args...)...)
	}
}

// Close stops the wires, captures and daemons and deletes every
// namespace, device and file the network made. It is idempotent (a
// second call returns the first's result) and works after a partial
// failure.
func (n *Network) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return n.closeErr
	}
	n.closed = true
	var errs []error
	// The daemons first: their TAPs are in the nodes' namespaces.
	for _, u := range n.uplinks {
		if err := u.d.Close(); err != nil {
			errs = append(errs, fmt.Errorf("uplink of %s: %w", u.node.name, err))
		}
	}
	for _, l := range n.links {
		if err := l.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	// Deleting a namespace deletes its veths and bridge with it.
	for _, nd := range slices.Backward(n.nodes) {
		if err := nd.remove(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, f := range n.files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(n.nodes) > 0 {
		n.logf("closed: %d nodes, %d links", len(n.nodes), len(n.links))
	}
	n.closeErr = errors.Join(errs...)
	if n.closeErr != nil {
		n.closeErr = fmt.Errorf("lab %s: close: %w", n.name, n.closeErr)
	}
	return n.closeErr
}

// Node returns the node called name, or nil.
func (n *Network) Node(name string) *Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.byName[name]
}

// Nodes returns the nodes in the order they were added.
func (n *Network) Nodes() []*Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.nodes)
}

// Links returns the links in the order they were made.
func (n *Network) Links() []*Link {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.links)
}

// NodeKind is what a node is.
type NodeKind int

// The kinds of node.
const (
	// Host is a namespace that does not forward.
	Host NodeKind = iota
	// Router is a host that forwards IPv4 and IPv6 between its links.
	Router
	// Switch is a kernel bridge in a namespace of its own.
	Switch
)

// String names the kind: "host", "router" or "switch".
func (k NodeKind) String() string {
	switch k {
	case Host:
		return "host"
	case Router:
		return "router"
	case Switch:
		return "switch"
	}
	return "NodeKind(" + strconv.Itoa(int(k)) + ")"
}

// Node is a host, a router or a switch of a Network: a network namespace.
type Node struct {
	net  *Network
	name string
	kind NodeKind
	ns   *netns.Namespace
	nh   *vnl.Handle
	etc  string // /etc/netns/<ns>, made by the network

	// Protected by the network's mu.
	nifs    int      // interfaces made in it so far (eth<i>)
	seg     *segment // a switch's segment
	forward bool     // IP forwarding is on
	uplink  *Uplink
}

// AddHost adds a host: a namespace (ip netns name <Name>-<name>) with its
// loopback up. A name is a hostname label: a-z, 0-9 and inner hyphens.
func (n *Network) AddHost(name string) (*Node, error) { return n.addNode(name, Host) }

// AddRouter adds a host that forwards IPv4 and IPv6 between its links.
func (n *Network) AddRouter(name string) (*Node, error) { return n.addNode(name, Router) }

// AddSwitch adds an L2 switch: a kernel bridge in a namespace of its own.
// Each Connect to it adds a port; the nodes on it share its subnets.
func (n *Network) AddSwitch(name string) (*Node, error) { return n.addNode(name, Switch) }

func (n *Network) addNode(name string, kind NodeKind) (nd *Node, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errClosed
	}
	if len(name) > maxNodeLen || !labNodeRE.MatchString(name) {
		return nil, fmt.Errorf("lab: node name %q: want 1 to %d characters of a-z, 0-9 and inner -", name, maxNodeLen)
	}
	if n.byName[name] != nil {
		return nil, fmt.Errorf("lab: node %s: %w", name, os.ErrExist)
	}
	nd = &Node{net: n, name: name, kind: kind}
	nsName := n.name + "-" + name
	defer func() {
		if err != nil {
			err = fmt.Errorf("lab: add %s %s: %w", kind, name, errors.Join(err, nd.remove()))
		}
	}()
	if nd.ns, err = netns.Create(nsName); err != nil {
		return nd, err
	}
	if nd.nh, err = vnl.NewHandleAt(vns.NsHandle(nd.ns.Fd())); err != nil {
		return nd, err
	}
	nd.etc = filepath.Join(etcNetns, nsName)
	if err := os.MkdirAll(nd.etc, 0o755); err != nil {
		return nd, err
	}
	// Addresses usable at once, link-local ones included: no duplicate
	// address detection in a network whose addresses are all planned.
	for _, k := range []string{"net.ipv6.conf.default.accept_dad", "net.ipv6.conf.all.accept_dad"} {
		if err := nd.sysctl(k, "0"); err != nil {
			return nd, fmt.Errorf("sysctl %s: %w", k, err)
		}
	}
	if failHook != nil {
		if err := failHook("node"); err != nil {
			return nd, err
		}
	}
	switch kind {
	case Router:
		if err := nd.setForwarding(); err != nil {
			return nd, err
		}
	case Switch:
		if err := nd.makeBridge(); err != nil {
			return nd, err
		}
		if nd.seg, err = n.newSegment(0, netip.Prefix{}, netip.Prefix{}, false); err != nil {
			return nd, err
		}
	}
	n.nodes = append(n.nodes, nd)
	n.byName[name] = nd
	n.logf("%s %s: netns %s", kind, name, nsName)
	if err := n.refreshLocked(); err != nil {
		return nd, err
	}
	return nd, nil
}

// remove deletes the node's namespace and /etc/netns directory.
func (nd *Node) remove() error {
	var errs []error
	if nd.nh != nil {
		nd.nh.Close()
		nd.nh = nil
	}
	if nd.ns != nil {
		if err := nd.ns.Close(); err != nil {
			errs = append(errs, err)
		}
		nd.ns = nil
	}
	if nd.etc != "" {
		if err := os.RemoveAll(nd.etc); err != nil {
			errs = append(errs, err)
		}
		nd.etc = ""
	}
	return errors.Join(errs...)
}

// sysctl writes value to /proc/sys/<key> inside the node.
func (nd *Node) sysctl(key, value string) error {
	return nd.ns.Do(func() error {
		return os.WriteFile(filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/")), []byte(value), 0o644)
	})
}

// setForwarding turns IPv4 and IPv6 forwarding on.
func (nd *Node) setForwarding() error {
	if nd.forward {
		return nil
	}
	for _, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if err := nd.sysctl(k, "1"); err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
	}
	nd.forward = true
	return nil
}

// makeBridge makes the switch's bridge, br0, without IPv6 of its own.
func (nd *Node) makeBridge() error {
	for _, k := range []string{"net.ipv6.conf.default.disable_ipv6", "net.ipv6.conf.all.disable_ipv6"} {
		if err := nd.sysctl(k, "1"); err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
	}
	off := false
	br := &vnl.Bridge{LinkAttrs: vnl.LinkAttrs{Name: "br0"}, MulticastSnooping: &off}
	if err := nd.nh.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge: %w", err)
	}
	if err := nd.nh.LinkSetUp(br); err != nil {
		return fmt.Errorf("bridge up: %w", err)
	}
	return nil
}

// Name is the node's name within its network.
func (nd *Node) Name() string { return nd.name }

// Kind is what the node is.
func (nd *Node) Kind() NodeKind { return nd.kind }

// NetNS is the node's `ip netns` name, <network name>-<node name>.
func (nd *Node) NetNS() string { return nd.net.name + "-" + nd.name }

// String is the node's name.
func (nd *Node) String() string { return nd.name }

// Addr4 is the node's first IPv4 address (on its first link that has
// one, then its uplink), zero if it has none.
func (nd *Node) Addr4() netip.Addr { return nd.firstAddr(true) }

// Addr6 is the node's first IPv6 address, zero if it has none.
func (nd *Node) Addr6() netip.Addr { return nd.firstAddr(false) }

func (nd *Node) firstAddr(v4 bool) netip.Addr {
	nd.net.mu.Lock()
	defer nd.net.mu.Unlock()
	return nd.firstAddrLocked(v4)
}

func (nd *Node) firstAddrLocked(v4 bool) netip.Addr {
	for _, p := range nd.addrsLocked() {
		if p.Addr().Is4() == v4 {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

// addrsLocked lists the node's addresses: its links' in their order,
// then its uplink's.
func (nd *Node) addrsLocked() []netip.Prefix {
	var out []netip.Prefix
	for _, l := range nd.net.links {
		if p := l.port(nd); p != nil {
			out = append(out, p.addrs...)
		}
	}
	if nd.uplink != nil {
		out = append(out, nd.uplink.addrs...)
	}
	return out
}

// Command returns a command that runs inside the node with `ip netns
// exec`, so that the node's /etc/netns/<ns>/hosts (and resolv.conf, with
// an uplink) stand for /etc's. ctx kills it.
func (nd *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", nd.NetNS(), name}, args...)...)
}

// Run calls f on an OS thread locked inside the node's namespace and
// returns its error; a panic in f is returned as an error. The thread is
// discarded afterwards, never reused by Go. Sockets f opens belong to the
// node and keep working after Run returns.
func (nd *Node) Run(f func() error) error {
	nd.net.mu.Lock()
	if nd.ns == nil {
		nd.net.mu.Unlock()
		return fmt.Errorf("lab: run in %s: %w", nd.name, errClosed)
	}
	h, err := vns.GetFromName(nd.NetNS())
	nd.net.mu.Unlock()
	if err != nil {
		return fmt.Errorf("lab: run in %s: %w", nd.name, err)
	}
	defer h.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Setns(int(h), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("lab: enter %s: %w", nd.NetNS(), err)
			return
		}
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("lab: panic in %s: %v\n%s", nd.name, r, debug.Stack())
			}
		}()
		done <- f()
	}()
	return <-done
}

// WaitPort waits until something listens on addr ("host:port", the host
// part ignored) for network "tcp" or "udp" (bound, for UDP) inside the
// node, or ctx ends.
func (nd *Node) WaitPort(ctx context.Context, network, addr string) error {
	_, ps, err := splitHostPortLab(addr)
	if err != nil {
		return fmt.Errorf("lab: wait for %s: %w", addr, err)
	}
	port64, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port64 == 0 {
		return fmt.Errorf("lab: wait for %s: bad port %q", addr, ps)
	}
	port := uint16(port64)
	tcp := strings.HasPrefix(network, "tcp")
	if !tcp && !strings.HasPrefix(network, "udp") {
		return fmt.Errorf("lab: wait for %s %s: network must be tcp or udp", network, addr)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		nd.net.mu.Lock()
		ns := nd.ns
		nd.net.mu.Unlock()
		if ns == nil {
			return fmt.Errorf("lab: wait for %s in %s: %w", addr, nd.name, errClosed)
		}
		var l netns.Listening
		err := ns.Do(func() (err error) {
			l, err = netns.ReadListening("/proc/thread-self/net", true)
			return err
		})
		if err != nil {
			return fmt.Errorf("lab: wait for %s in %s: %w", addr, nd.name, err)
		}
		if tcp && (l.TCP4[port] || l.TCP6[port]) || !tcp && (l.UDP4[port] || l.UDP6[port]) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: wait for %s %s in %s: %w", network, addr, nd.name, ctx.Err())
		case <-tick.C:
		}
	}
}

// splitHostPortLab is net.SplitHostPort that also takes a bare port.
func splitHostPortLab(addr string) (host, port string, err error) {
	if !strings.Contains(addr, ":") {
		return "", addr, nil
	}
	i := strings.LastIndexByte(addr, ':')
	host, port = addr[:i], addr[i+1:]
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if port == "" {
		return "", "", errors.New("missing port")
	}
	return host, port, nil
}
