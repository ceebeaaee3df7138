package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/link"
)

// LinkKind is how a link carries frames.
type LinkKind int

// The kinds of link.
const (
	// Veth is a kernel veth pair.
	Veth LinkKind = iota
	// Wire is two TAP devices, one in each node, joined in userspace:
	// each direction goes through link.Impair.
	Wire
)

// String names the kind: "veth" or "wire".
func (k LinkKind) String() string {
	switch k {
	case Veth:
		return "veth"
	case Wire:
		return "wire"
	}
	return "LinkKind(" + strconv.Itoa(int(k)) + ")"
}

// LinkOptions configures a link; the zero value is a veth with automatic
// addresses.
type LinkOptions struct {
	Kind LinkKind
	// Impair is the wire's impairment from the start, in
	// link.ParseImpairSpec's syntax ("loss=5%,delay=10ms"), seen from the
	// link's first node a: "out:" impairs what a sends to b, "in:" what
	// a receives from b, a key without a prefix both. Wire only.
	Impair string
	// MTU is the interfaces' MTU (1500 if 0).
	MTU int
	// Subnet4 is the link's IPv4 subnet: zero takes 10.77.<k>.0/24 (k the
	// link's index if that subnet is free, else the next free one) or,
	// on a switch, the switch's subnet. The nodes get its hosts 1, 2, …
	// in the order they join it.
	Subnet4 netip.Prefix
	// Subnet6 is the link's IPv6 subnet: zero takes fd77:<k>::/64.
	Subnet6 netip.Prefix
	// NoIPv6 leaves the link without IPv6 addresses.
	NoIPv6 bool
	// Addrs gives nodes (by name) addresses of their own on this link,
	// instead of automatic ones.
	Addrs map[string][]netip.Prefix
}

// Link joins two nodes: a veth pair or a wire.
type Link struct {
	net   *Network
	name  string
	kind  LinkKind
	index int
	a, b  *port
	seg   *segment

	w       *wire    // Wire only
	sniff   *sniffer // a veth's capture
	pcap    *link.Pcap
	capPath string
	stopped bool // protected by net.mu
}

// port is one end of a link: a node's interface and its addresses.
type port struct {
	node    *Node
	iface   string
	ifindex int
	addrs   []netip.Prefix // protected by net.mu
}

// segment is an L2 network: the two ends of a plain link, or the nodes on
// a switch.
type segment struct {
	sub4, sub6 netip.Prefix // the automatic subnets (invalid: none)
	noIPv6     bool
	ports      []*port // the nodes' ends (a switch's own ports are not here)
}

// Connect joins a and b with a link. One of them may be a switch (not
// both): the link is then a port of the switch, and the other node gets
// an address in the switch's subnets. The addresses and routes of every
// node are brought up to date.
func (n *Network) Connect(a, b *Node, opts LinkOptions) (l *Link, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errClosed
	}
	if a == nil || b == nil || a.net != n || b.net != n {
		return nil, errors.New("lab: connect: both nodes must be of this network")
	}
	if a == b {
		return nil, fmt.Errorf("lab: connect %s to itself", a.name)
	}
	if a.kind == Switch && b.kind == Switch {
		return nil, fmt.Errorf("lab: connect %s and %s: two switches cannot be joined", a.name, b.name)
	}
	if opts.Kind != Veth && opts.Kind != Wire {
		return nil, fmt.Errorf("lab: connect %s and %s: unknown link kind %d", a.name, b.name, opts.Kind)
	}
	var spec link.ImpairSpec
	if opts.Impair != "" {
		if opts.Kind != Wire {
			return nil, fmt.Errorf("lab: connect %s and %s: only a wire can be impaired (Kind: Wire)", a.name, b.name)
		}
		if spec, err = link.ParseImpairSpec(opts.Impair); err != nil {
			return nil, fmt.Errorf("lab: connect %s and %s: %w", a.name, b.name, err)
		}
	}
	mtu := opts.MTU
	if mtu == 0 {
		mtu = link.DefaultMTU
	}
	if mtu < 68 || mtu > link.MaxMTU {
		return nil, fmt.Errorf("lab: connect %s and %s: MTU %d out of range 68..%d", a.name, b.name, mtu, link.MaxMTU)
	}
	for name := range opts.Addrs {
		if name != a.name && name != b.name {
			return nil, fmt.Errorf("lab: connect %s and %s: addresses for %s, which is not on the link", a.name, b.name, name)
		}
	}
	k := n.nextLink + 1
	l = &Link{net: n, kind: opts.Kind, index: k, name: n.name + "-l" + strconv.Itoa(k)}
	l.a = &port{node: a, iface: a.nextIface()}
	l.b = &port{node: b, iface: b.nextIface()}
	defer func() {
		if err != nil {
			err = fmt.Errorf("lab: connect %s and %s: %w", a.name, b.name, errors.Join(err, l.stop(), l.unmake()))
		}
	}()

	// The segment, its subnets and the addresses.
	sw := a
	if b.kind == Switch {
		sw = b
	}
	if sw.kind == Switch {
		l.seg = sw.seg
		if (opts.Subnet4.IsValid() && opts.Subnet4.Masked() != l.seg.sub4) || (opts.Subnet6.IsValid() && opts.Subnet6.Masked() != l.seg.sub6) {
			if len(l.seg.ports) > 0 {
				return nil, fmt.Errorf("switch %s has subnets %s and %s already", sw.name, l.seg.sub4, l.seg.sub6)
			}
			if opts.Subnet4.IsValid() {
				l.seg.sub4 = opts.Subnet4.Masked()
			}
			if opts.Subnet6.IsValid() {
				l.seg.sub6 = opts.Subnet6.Masked()
			}
		}
	} else {
		if l.seg, err = n.newSegment(k, opts.Subnet4, opts.Subnet6, opts.NoIPv6); err != nil {
			return l, err
		}
	}
	var taken []netip.Prefix
	for _, p := range []*port{l.a, l.b} {
		if given, ok := opts.Addrs[p.node.name]; ok && p.node.kind != Switch {
			p.addrs = given
			taken = append(taken, given...)
		}
	}
	for _, p := range []*port{l.a, l.b} {
		if _, ok := opts.Addrs[p.node.name]; ok || p.node.kind == Switch {
			continue
		}
		if p.addrs, err = l.seg.allocate(opts.NoIPv6, taken); err != nil {
			return l, err
		}
		taken = append(taken, p.addrs...)
	}

	// The devices.
	switch opts.Kind {
	case Veth:
		err = l.makeVeth(mtu)
	case Wire:
		err = l.makeWire(mtu, spec)
	}
	if err != nil {
		return l, err
	}
	for _, p := range []*port{l.a, l.b} {
		if err := p.configure(); err != nil {
			return l, err
		}
	}
	for _, p := range []*port{l.a, l.b} {
		p.waitReady(n.logf)
	}
	if n.opts.CaptureDir != "" {
		if err := l.startCapture(); err != nil {
			return l, err
		}
	}
	if failHook != nil {
		if err := failHook("link"); err != nil {
			return l, err
		}
	}
	if l.w != nil {
		l.w.start(n.logf)
	}
	n.nextLink = k
	n.links = append(n.links, l)
	for _, p := range []*port{l.a, l.b} {
		if p.node.kind != Switch {
			l.seg.ports = append(l.seg.ports, p)
		}
	}
	n.logf("%s %s: %s %s %v — %s %s %v", opts.Kind, l.name, a.name, l.a.iface, l.a.addrs, b.name, l.b.iface, l.b.addrs)
	if err := n.refreshLocked(); err != nil {
		return l, err
	}
	return l, nil
}

// nextIface names the node's next interface: eth0, eth1, …
func (nd *Node) nextIface() string {
	s := "eth" + strconv.Itoa(nd.nifs)
	nd.nifs++
	return s
}

// port returns nd's end of l, or nil.
func (l *Link) port(nd *Node) *port {
	switch nd {
	case l.a.node:
		return l.a
	case l.b.node:
		return l.b
	}
	return nil
}

// makeVeth makes the veth pair with each end in its node.
func (l *Link) makeVeth(mtu int) error {
	v := &vnl.Veth{
		// An index of its own, unlike any the peer's namespace hands
		// out: a veth whose index equals its peer's is not an urgent
		// event to the kernel's link watch, which then delays its
		// carrier (and its IPv6 addresses) by up to a second.
		LinkAttrs:     vnl.LinkAttrs{Name: l.a.iface, MTU: mtu, Index: 1000 + l.index},
		PeerName:      l.b.iface,
		PeerNamespace: vnl.NsFd(l.b.node.ns.Fd()),
	}
	if err := l.a.node.nh.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	if b, err := l.b.node.nh.LinkByName(l.b.iface); err == nil && mtu != b.Attrs().MTU {
		if err := l.b.node.nh.LinkSetMTU(b, mtu); err != nil {
			return fmt.Errorf("veth MTU: %w", err)
		}
	}
	return nil
}

// configure gives the port its addresses, joins a switch's bridge, and
// brings the interface up.
func (p *port) configure() error {
	nh := p.node.nh
	il, err := nh.LinkByName(p.iface)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", p.iface, p.node.name, err)
	}
	p.ifindex = il.Attrs().Index
	if p.node.kind == Switch {
		br, err := nh.LinkByName("br0")
		if err != nil {
			return fmt.Errorf("bridge of %s: %w", p.node.name, err)
		}
		if err := nh.LinkSetMaster(il, br); err != nil {
			return fmt.Errorf("%s into the bridge of %s: %w", p.iface, p.node.name, err)
		}
	}
	for _, a := range p.addrs {
		na := &vnl.Addr{IPNet: ipNet(a), Flags: unix.IFA_F_NODAD}
		if err := nh.AddrAdd(il, na); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("address %s on %s in %s: %w", a, p.iface, p.node.name, err)
		}
	}
	if err := nh.LinkSetUp(il); err != nil {
		return fmt.Errorf("%s in %s up: %w", p.iface, p.node.name, err)
	}
	return nil
}

// readyTimeout bounds the wait for a new interface to carry traffic.
const readyTimeout = 3 * time.Second

// waitReady waits until the port's interface runs (carrier seen by the
// kernel) and its IPv6 addresses are no longer tentative, so that a
// Connect returns a link that carries both families. After readyTimeout
// it logs and returns: the link may still come up.
func (p *port) waitReady(logf func(string, ...any)) {
	deadline := time.Now().Add(readyTimeout)
	for {
		il, err := p.node.nh.LinkByIndex(p.ifindex)
		if err != nil {
			return
		}
		ready := il.Attrs().RawFlags&unix.IFF_RUNNING != 0
		if ready && p.node.kind != Switch {
			addrs, err := p.node.nh.AddrList(il, unix.AF_INET6)
			if err != nil {
				return
			}
			for _, a := range addrs {
				if a.Flags&unix.IFA_F_TENTATIVE != 0 {
					ready = false
				}
			}
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			logf("%s in %s: not ready after %v", p.iface, p.node.name, readyTimeout)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// unmake deletes the link's interfaces (after a failed Connect).
func (l *Link) unmake() error {
	for _, p := range []*port{l.a, l.b} {
		if p == nil || p.node.nh == nil {
			continue
		}
		if il, err := p.node.nh.LinkByName(p.iface); err == nil {
			_ = p.node.nh.LinkDel(il)
		}
	}
	return nil
}

// stop ends the link's wire and capture. It is idempotent.
func (l *Link) stop() error {
	if l.stopped {
		return nil
	}
	l.stopped = true
	var errs []error
	if l.w != nil {
		if err := l.w.close(); err != nil {
			errs = append(errs, fmt.Errorf("wire %s: %w", l.name, err))
		}
	}
	if l.sniff != nil {
		l.sniff.close()
	}
	if l.pcap != nil {
		if err := l.pcap.Close(); err != nil {
			errs = append(errs, fmt.Errorf("capture of %s: %w", l.name, err))
		}
	}
	return errors.Join(errs...)
}

// startCapture writes the link's frames, as the first node's interface
// sees them, to <CaptureDir>/<link name>.pcap.
func (l *Link) startCapture() error {
	path := filepath.Join(l.net.opts.CaptureDir, l.name+".pcap")
	p, err := link.CreatePcap(path, link.PcapOptions{})
	if err != nil {
		return err
	}
	l.pcap, l.capPath = p, path
	if l.w != nil {
		l.w.obs.p.Store(p)
		return nil
	}
	s, err := startSniffer(l.a.node, l.a.ifindex, p)
	if err != nil {
		return fmt.Errorf("capture on %s in %s: %w", l.a.iface, l.a.node.name, err)
	}
	l.sniff = s
	return nil
}

// Name is the link's name, <network name>-l<k>.
func (l *Link) Name() string { return l.name }

// Kind is how the link carries frames.
func (l *Link) Kind() LinkKind { return l.kind }

// Nodes are the link's two nodes, in Connect's order.
func (l *Link) Nodes() (a, b *Node) { return l.a.node, l.b.node }

// Iface is the link's interface name inside nd, "" if nd is not on it.
func (l *Link) Iface(nd *Node) string {
	if p := l.port(nd); p != nil {
		return p.iface
	}
	return ""
}

// Addrs are nd's addresses on the link (none for a switch).
func (l *Link) Addrs(nd *Node) []netip.Prefix {
	l.net.mu.Lock()
	defer l.net.mu.Unlock()
	if p := l.port(nd); p != nil {
		return append([]netip.Prefix(nil), p.addrs...)
	}
	return nil
}

// Impair changes a wire's impairment while it runs, in LinkOptions.Impair's
// syntax ("" or "off" for none). Frames already held keep their schedule.
func (l *Link) Impair(spec string) error {
	if l.w == nil {
		return fmt.Errorf("lab: impair %s: only a wire can be impaired", l.name)
	}
	sp, err := link.ParseImpairSpec(spec)
	if err != nil {
		return fmt.Errorf("lab: impair %s: %w", l.name, err)
	}
	l.w.set(sp)
	l.net.logf("impair %s: %q (seed %d)", l.name, spec, l.w.seed)
	return nil
}

// Stats counts what a wire did each way while it was impaired (frames
// that cross an unimpaired direction are not counted); zero for a veth.
func (l *Link) Stats() (aToB, bToA link.ImpairStats) {
	if l.w == nil {
		return
	}
	return l.w.stats()
}

// Seed is the seed of a wire's impairment (0 for a veth).
func (l *Link) Seed() int64 {
	if l.w == nil {
		return 0
	}
	return l.w.seed
}

// CapturePath is the link's pcap file, "" when not capturing.
func (l *Link) CapturePath() string { return l.capPath }

// fromA turns a spec seen from a node ("out:" what it sends) into the
// link.Impair's of a device on that node's side (In: what the device
// reads, the node's sends).
func fromA(s link.ImpairSpec) link.ImpairSpec { return link.ImpairSpec{In: s.Out, Out: s.In} }

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
