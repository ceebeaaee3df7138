// Package nshost builds a tapstack host whose wire is a TAP inside a Linux
// network namespace: the namespace (made or opened), the TAP (created in
// the caller's namespace under a temporary name, then moved in and
// renamed), the kernel side's addresses and routes, and the gVisor stack on
// the TAP's queues. `tapstack up` and the test harness both stand on it.
//
// Start at New; Close undoes exactly what New did.
package nshost

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack"
	"github.com/tapstack/tapstack/stack/netns"
)

// DefaultTAP is the TAP's name inside the namespace.
const DefaultTAP = "tap0"

// Config describes a host. The zero value of each field is its default.
type Config struct {
	// Netns names the namespace. It is created when missing (and then
	// deleted by Close) and reused when present. Empty means a new,
	// uniquely named one.
	Netns string
	// PID, when not 0, uses the network namespace of that process instead
	// of a named one.
	PID int
	// NetnsPath, when set, uses the namespace of that file (a
	// /proc/PID/ns/net or a bind mount of one) instead of a named one.
	NetnsPath string
	// NoConfigure leaves the kernel side as the TAP comes (down, no
	// addresses): the caller configures it, as slirp4netns without -c.
	NoConfigure bool
	// MAC is the kernel side's MAC address (nil: the kernel's random one).
	MAC net.HardwareAddr
	// TAP is the interface's name inside the namespace (DefaultTAP).
	TAP string
	// MTU is the IP MTU of both sides (link.DefaultMTU).
	MTU int
	// Queues is the number of TAP queues (1).
	Queues int
	// Offload opens the TAP with virtio_net_hdr, checksum offload and TSO
	// both ways (link.TAPConfig.Offload).
	Offload bool
	// TxQueues is the number of transmit queues between the stack and
	// the TAP (stack.LinkConfig.TxQueues; 0 writes from the sender).
	TxQueues int
	// StackAddrs are the stack's addresses (DefaultPlan().Stack).
	StackAddrs []netip.Prefix
	// NSAddrs are the kernel side's addresses (DefaultPlan().NS). The first
	// stack address of each family is the namespace's default gateway.
	NSAddrs []netip.Prefix
	// MaxSockets is the socket table capacity (stack.DefaultMaxSockets).
	MaxSockets int
	// SocketSites records where each socket was made (stack.Config).
	SocketSites bool
	// Observer sees every frame on the TAP.
	Observer link.Observer
	// Gateway makes the stack accept flows to any address (see
	// stack.LinkConfig.Gateway), for a relay.
	Gateway bool
	// ExtraStackAddrs are more addresses of the stack on the TAP that are
	// not gateways (such as the DNS forwarder's 10.0.2.3).
	ExtraStackAddrs []netip.Prefix
	// Init is passed to stack.Config.Init.
	Init func(*stack.Stack) error
	// Logf, if set, hears of the link's read errors (link.Options.Logf).
	Logf func(format string, args ...any)
	// FilterSources drops, at the link, IP packets whose source is not one
	// of NSAddrs (see SourceFilter): a gateway's defence against spoofed
	// floods from the namespace.
	FilterSources bool
	// Impair impairs the wire (link.Impair on each of the TAP's queues):
	// what it loses, delays, reorders. ImpairSeed seeds its decisions
	// (queue i uses ImpairSeed+i). Impairable puts the wrapper in place
	// even for a zero Impair, so that SetImpairment can change it later.
	Impair     link.ImpairSpec
	ImpairSeed int64
	Impairable bool
}

// linkOptions are the endpoint options cfg asks for, the source set of
// its filter (nil: none) and the impairment wrappers of its devices.
func (c *Config) linkOptions(devs []link.Device, vnet bool) (link.Options, *SourceSet, []*link.Impair) {
	var imps []*link.Impair
	if c.Impairable || !c.Impair.IsZero() {
		wrapped := make([]link.Device, len(devs))
		for i, d := range devs {
			imp := link.NewImpair(d, c.Impair, link.ImpairOptions{Seed: c.ImpairSeed + int64(i), VnetHdr: vnet})
			imps = append(imps, imp)
			wrapped[i] = imp
		}
		devs = wrapped
	}
	o := link.Options{Devices: devs, MTU: uint32(c.MTU), Observer: c.Observer, VnetHdr: vnet, Logf: c.Logf}
	var set *SourceSet
	if c.FilterSources {
		var addrs []netip.Addr
		for _, p := range c.NSAddrs {
			addrs = append(addrs, p.Addr())
		}
		set = NewSourceSet(addrs)
		o.Filter = set.Allows
	}
	return o, set, imps
}

// Host is a running tapstack host in a namespace.
type Host struct {
	Stack *stack.Stack
	Link  *link.Endpoint
	NS    *netns.Namespace
	// TAP is the interface name inside the namespace.
	TAP        string
	StackAddrs []netip.Prefix
	NSAddrs    []netip.Prefix
	MTU        int

	unconfigured bool           // Config.NoConfigure
	extra        []netip.Prefix // Config.ExtraStackAddrs
	sources      *SourceSet     // the link's source filter, if any
	impairs      []*link.Impair // the wire's impairment, one per queue, if any
}

// AddGuest accepts another address of the namespace as the target of a port
// forward: it must lie in one of the namespace's networks and be none of
// the stack's addresses nor a network or broadcast address. The link's
// source filter, if any, lets its packets through from then on.
func (h *Host) AddGuest(a netip.Addr) error {
	a = a.Unmap()
	for _, p := range append(append([]netip.Prefix{}, h.StackAddrs...), h.extra...) {
		if p.Addr() == a {
			return fmt.Errorf("%s is the stack's own address", a)
		}
	}
	for _, p := range h.NSAddrs {
		if !p.Contains(a) {
			continue
		}
		if a.Is4() && p.Bits() < 31 && (a == p.Masked().Addr() || a == lastAddr(p)) {
			return fmt.Errorf("%s is the network or broadcast address of %s", a, p.Masked())
		}
		if h.sources != nil {
			h.sources.Add(a)
		}
		return nil
	}
	return fmt.Errorf("%s is outside the namespace's networks (%s)", a, joinPrefixes(h.NSAddrs))
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func joinPrefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Masked().String())
	}
	return strings.Join(s, ", ")
}

// UniqueName returns prefix followed by random hex, short enough for an
// interface name when prefix is at most 5 bytes.
func UniqueName(prefix string) string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func (c *Config) fill() error {
	if c.PID != 0 || c.NetnsPath != "" {
		if c.PID < 0 {
			return fmt.Errorf("PID %d is not a process ID", c.PID)
		}
	} else {
		if c.Netns == "" {
			c.Netns = UniqueName("tapstack-")
		}
		if err := netns.ValidName(c.Netns); err != nil {
			return err
		}
	}
	if c.TAP == "" {
		c.TAP = DefaultTAP
	}
	if len(c.TAP) > 15 {
		return fmt.Errorf("TAP name %q is longer than 15 bytes", c.TAP)
	}
	if c.MTU == 0 {
		c.MTU = link.DefaultMTU
	}
	if c.MTU < 1280 || c.MTU > link.MaxMTU {
		return fmt.Errorf("MTU %d out of range 1280..%d (IPv6 needs 1280)", c.MTU, link.MaxMTU)
	}
	if len(c.StackAddrs) == 0 {
		c.StackAddrs = DefaultPlan().Stack
	}
	if len(c.NSAddrs) == 0 {
		c.NSAddrs = DefaultPlan().NS
	}
	for _, p := range append(append([]netip.Prefix{}, c.StackAddrs...), c.NSAddrs...) {
		if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return fmt.Errorf("address %v: want an IPv4 or IPv6 CIDR like 10.0.2.2/24", p)
		}
	}
	for _, s := range c.StackAddrs {
		for _, n := range c.NSAddrs {
			if s.Addr() == n.Addr() {
				return fmt.Errorf("address %s is given to both the stack and the namespace", s.Addr())
			}
		}
	}
	return nil
}

// New builds the host. On error it removes whatever it made.
func New(cfg Config) (h *Host, err error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	var ns *netns.Namespace
	switch {
	case cfg.NetnsPath != "":
		ns, err = netns.OpenPath(cfg.NetnsPath)
	case cfg.PID != 0:
		ns, err = netns.OpenPID(cfg.PID)
	default:
		ns, err = netns.OpenOrCreate(cfg.Netns)
	}
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { ns.Close() })
	if ns.LinkExists(cfg.TAP) {
		return nil, fmt.Errorf("namespace %s already has a link named %s (choose another with --tap)", ns, cfg.TAP)
	}

	// The TAP shows under its name only once it has its addresses.
	var early []netip.Prefix
	if !cfg.NoConfigure {
		early = cfg.NSAddrs
	}
	tmp := UniqueName("tst")
	tc := link.TAPConfig{Name: tmp, Queues: cfg.Queues, MTU: cfg.MTU, Offload: cfg.Offload, MAC: cfg.MAC}
	tap, err := link.OpenTAP(tc)
	switch {
	case err == nil:
		undo = append(undo, func() { tap.Close() })
		if err := ns.MoveLink(tmp, cfg.TAP, early...); err != nil {
			return nil, err
		}
	case errors.Is(err, syscall.EPERM) && !ns.Created:
		// Root of a user namespace (rootless podman starts its network
		// command so) may not make links in the host's network namespace
		// but may in the target's, which its user namespace owns.
		if ierr := ns.Do(func() error {
			tap, err = link.OpenTAP(tc)
			return err
		}); ierr != nil {
			return nil, ierr
		}
		undo = append(undo, func() { tap.Close() })
		if err := ns.RenameLink(tmp, cfg.TAP, early...); err != nil {
			return nil, err
		}
	default:
		return nil, err
	}
	lo, sources, imps := cfg.linkOptions(tap.Devices(), tap.Offload())
	ep, err := link.New(lo)
	if err != nil {
		for _, imp := range imps {
			imp.Close()
		}
		return nil, err
	}
	gw4, gw6 := Gateways(cfg.StackAddrs)
	if !cfg.NoConfigure {
		if err := ns.Configure(netns.LinkConfig{Name: cfg.TAP, Addrs: cfg.NSAddrs, Gateway4: gw4, Gateway6: gw6}); err != nil {
			ep.Close()
			return nil, err
		}
	}
	h, err = newHost(cfg, ep, sources, imps)
	if err != nil {
		return nil, err
	}
	h.NS = ns
	h.unconfigured = cfg.NoConfigure
	return h, nil
}

// newHost builds the stack on ep (which it owns from then on).
func newHost(cfg Config, ep *link.Endpoint, sources *SourceSet, imps []*link.Impair) (*Host, error) {
	st, err := stack.New(stack.Config{
		MaxSockets: cfg.MaxSockets, SocketSites: cfg.SocketSites,
		Init: cfg.Init,
		Links: []stack.LinkConfig{{
			Name: cfg.TAP, Endpoint: ep, Gateway: cfg.Gateway, TxQueues: cfg.TxQueues,
			Addrs: append(append([]netip.Prefix{}, cfg.StackAddrs...), cfg.ExtraStackAddrs...),
		}},
	})
	if err != nil {
		return nil, err
	}
	return &Host{Stack: st, Link: ep, TAP: cfg.TAP, StackAddrs: cfg.StackAddrs, NSAddrs: cfg.NSAddrs, MTU: cfg.MTU,
		extra: cfg.ExtraStackAddrs, sources: sources, impairs: imps}, nil
}

// SetImpairment changes the impairment of the wire while it runs; the
// host must have been made with Config.Impairable (or an Impair).
func (h *Host) SetImpairment(spec link.ImpairSpec) error {
	if len(h.impairs) == 0 {
		return errors.New("this host's wire cannot be impaired: make it with Config.Impairable")
	}
	for _, imp := range h.impairs {
		imp.Set(spec)
	}
	if !spec.In.IsZero() {
		// Inbound frames are impaired on the way to the link's reader
		// goroutines: a poll loop that reads the devices gives them
		// back, and cannot take them again while the impairment lasts
		// (canPoll); what it reads meanwhile goes to the impairment.
		h.Link.Unpoll()
	}
	return nil
}

// Impairment returns the impairment in force, its seed, and what it did
// each way, all queues together; ok is false for a host that cannot be
// impaired.
func (h *Host) Impairment() (spec link.ImpairSpec, seed int64, in, out link.ImpairStats, ok bool) {
	if len(h.impairs) == 0 {
		return spec, 0, in, out, false
	}
	spec, seed = h.impairs[0].Spec(), h.impairs[0].Seed()
	for _, imp := range h.impairs {
		i, o := imp.Stats()
		in, out = addImpairStats(in, i), addImpairStats(out, o)
	}
	return spec, seed, in, out, true
}

func addImpairStats(a, b link.ImpairStats) link.ImpairStats {
	return link.ImpairStats{
		Frames: a.Frames + b.Frames, Dropped: a.Dropped + b.Dropped, Overflowed: a.Overflowed + b.Overflowed,
		Duplicated: a.Duplicated + b.Duplicated, Corrupted: a.Corrupted + b.Corrupted, Reordered: a.Reordered + b.Reordered,
		Delayed: a.Delayed + b.Delayed,
	}
}

// NewOnDevices builds the stack on TAP queues that already exist in a
// namespace configured by someone else (the child of a rootless run opens
// and configures the TAP inside its user namespace and passes the queues
// over). The Host has no NS; WaitReady is then the caller's business.
func NewOnDevices(cfg Config, devs []link.Device) (*Host, error) {
	if err := cfg.fill(); err != nil {
		for _, d := range devs {
			d.Close()
		}
		return nil, err
	}
	lo, sources, imps := cfg.linkOptions(devs, cfg.Offload)
	ep, err := link.New(lo)
	if err != nil {
		for _, d := range lo.Devices {
			d.Close()
		}
		return nil, err
	}
	return newHost(cfg, ep, sources, imps)
}

// Gateways returns the first stack address of each family, the
// namespace's default gateways.
func Gateways(stackAddrs []netip.Prefix) (gw4, gw6 netip.Addr) {
	for _, p := range stackAddrs {
		if p.Addr().Is4() && !gw4.IsValid() {
			gw4 = p.Addr()
		}
		if p.Addr().Is6() && !gw6.IsValid() {
			gw6 = p.Addr()
		}
	}
	return gw4, gw6
}

// WaitReady returns once the namespace reaches the stack at each of its
// addresses (at once for a namespace this host did not configure): a
// TCP connection attempt from inside the namespace to port 9 gets an
// answer (Answered: it crossed the TAP both ways).
func (h *Host) WaitReady(ctx context.Context) error {
	if h.NS == nil || h.unconfigured {
		return nil
	}
	for _, p := range h.StackAddrs {
		addr := netip.AddrPortFrom(p.Addr(), 9).String()
		for {
			err := h.NS.Do(func() error {
				d := net.Dialer{Timeout: 500 * time.Millisecond}
				c, err := d.DialContext(ctx, "tcp", addr)
				if err == nil {
					c.Close()
				}
				return err
			})
			if Answered(err) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("namespace %s cannot reach the stack at %s: %w", h.NS, addr, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// Close stops the stack (closing the TAP, which removes the device) and
// deletes the namespace if New created it. It is idempotent.
func (h *Host) Close() error {
	h.Stack.Close()
	if h.NS == nil {
		return nil
	}
	return h.NS.Close()
}

// Answered says whether a TCP connection attempt from the namespace to
// the stack's address got an answer from the stack: it was accepted,
// refused (a RST), or refused as a relay with host loopback off refuses
// a port the stack does not serve (ICMP network unreachable). The
// namespace is configured by then, so a route to the stack's network
// exists and the kernel itself never answers ENETUNREACH.
func Answered(err error) bool {
	return err == nil || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENETUNREACH)
}
