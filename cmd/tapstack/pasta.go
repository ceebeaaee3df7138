package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/internal/handoff"
	"github.com/tapstack/tapstack/internal/pastacli"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/stack/nshost"
)

// pastaDaemonEnv marks the daemon a backgrounding pasta started; its
// value is the descriptor on which it says it is ready (or why not).
const pastaDaemonEnv = "TAPSTACK_PASTA_READY_FD"

// runPasta is `tapstack pasta`, and tapstack invoked as pasta: pasta's
// command line on a tapstack host. Unless -f, it returns (exit 0) once
// the namespace is configured and reachable, leaving the daemon in the
// background, its PID in --pid FILE, as pasta does.
func runPasta(argv0 string, args []string, stdout, stderr io.Writer) int {
	o, err := pastacli.Parse(args)
	switch {
	case errors.Is(err, pastacli.ErrHelp):
		fmt.Fprint(stdout, pastacli.Usage)
		return 0
	case errors.Is(err, pastacli.ErrVersion):
		fmt.Fprintf(stdout, "pasta %s\ntapstack %s\n", pastacli.Version, version)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		return 1
	}
	readyFD, _ := strconv.Atoi(os.Getenv(pastaDaemonEnv))
	if !o.Foreground && readyFD == 0 {
		return pastaBackground(argv0, o, args, stderr)
	}
	ready := func(err error) {
		if o.Foreground && err == nil && o.PIDFile != "" {
			err = os.WriteFile(o.PIDFile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644)
		}
		if readyFD == 0 {
			return
		}
		f := os.NewFile(uintptr(readyFD), "ready")
		msg := "ok\n"
		if err != nil {
			msg = err.Error() + "\n"
		}
		f.WriteString(msg)
		f.Close()
	}
	if err := servePasta(o, ready, stderr); err != nil {
		ready(err)
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		return 1
	}
	return 0
}

// runPastaCommand is runPasta as a tapstack subcommand.
func runPastaCommand(args []string, stdout, stderr io.Writer) error {
	if code := runPasta("tapstack pasta", args, stdout, stderr); code != 0 {
		return exitError{code}
	}
	return nil
}

// pastaBackground starts this pasta again as the daemon, in a session of
// its own with its standard streams on /dev/null (callers such as
// rootlesskit wait for the output to end), and waits until it says it is
// ready; then it writes the daemon's PID to --pid and exits 0.
func pastaBackground(argv0 string, o *pastacli.Options, args []string, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		return 1
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		return 1
	}
	cmd := exec.Command(self, append([]string{"pasta"}, args...)...)
	cmd.Env = append(os.Environ(), pastaDaemonEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if o.LogFile != "" {
		f, err := os.OpenFile(o.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintf(stderr, "%s: log file: %v\n", argv0, err)
			return 1
		}
		defer f.Close()
		cmd.Stderr = f
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		return 1
	}
	w.Close()
	msg, _ := io.ReadAll(r)
	r.Close()
	if string(msg) != "ok\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		why := strings.TrimSpace(string(msg))
		if why == "" {
			why = "the daemon ended before it was ready"
		}
		fmt.Fprintf(stderr, "%s: %s\n", argv0, why)
		return 1
	}
	if o.PIDFile != "" {
		if err := os.WriteFile(o.PIDFile, []byte(fmt.Sprintf("%d\n", cmd.Process.Pid)), 0o644); err != nil {
			fmt.Fprintf(stderr, "%s: PID file open: %v\n", argv0, err)
			return 1
		}
	}
	_ = cmd.Process.Release()
	return 0
}

// servePasta runs the daemon for o until its namespace goes away or a
// signal comes; ready is told once it serves (or why it cannot).
func servePasta(o *pastacli.Options, ready func(error), stderr io.Writer) error {
	cfg, err := pastaConfig(o, stderr)
	if err != nil {
		return err
	}
	setProcs(0)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Geteuid() != 0 {
		// Without root the helper opens the TAP in the target's user and
		// network namespaces and hands it over.
		hc := handoff.Config{TAP: cfg.TAP, MTU: cfg.MTU, Offload: true, Configure: o.ConfigNet,
			NSAddrs: cfg.Plan.NS, StackAddrs: cfg.Plan.Stack}
		args, target := []string{"--preserve-credentials"}, cfg.NetnsPath
		if o.PID != 0 {
			target = strconv.Itoa(o.PID)
			args = append(args, "--target", target, "--net")
		} else {
			args = append(args, "--net="+o.NetnsPath)
		}
		switch {
		case o.UsernsPath != "":
			args = append(args, "--user="+o.UsernsPath)
		case o.PID != 0 && !o.NetnsOnly:
			args = append(args, "--user")
		default:
			return errors.New("without root, needs the user namespace that owns the network namespace (--userns, or a PID)")
		}
		tap, err := openTAPInTarget(args, target, hc)
		if err != nil {
			return err
		}
		cfg.Devices = tap.Devices()
	}
	d, err := daemon.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer d.Close()
	ready(nil)
	select {
	case <-ctx.Done():
		d.Drain()
	case <-d.Done():
		// The namespace went away: pasta's normal end.
	}
	return nil
}

// pastaConfig turns pasta's options into a daemon's configuration, with
// pasta's defaults where they differ from tapstack's.
func pastaConfig(o *pastacli.Options, stderr io.Writer) (daemon.Config, error) {
	level := "warn"
	if o.Debug {
		level = "debug"
	}
	log, _ := daemon.NewLogger(stderr, "text", level, false)
	cfg := daemon.Config{
		PID: o.PID, NetnsPath: o.NetnsPath, QuitWithNetnsPath: !o.NoNetnsQuit, TAP: o.Ifname, MTU: o.MTU, NoConfigure: !o.ConfigNet, Log: log,
		Relay: relay.Config{
			// pasta maps the gateway to the host's loopback unless
			// --no-map-gw; its other mappings stand for the host too.
			HostLoopback: !o.NoMapGW, MapToHost: append(append([]netip.Addr(nil), o.MapHostLoopback...), o.MapGuestAddr...),
			NoDHCP: o.NoDHCP, NoRA: o.NoRA || o.NoNDP,
		},
	}
	if cfg.TAP == "" {
		cfg.TAP = nshost.DefaultTAP
	}
	if o.PID != 0 && o.NetnsPath == "" {
		cfg.NetnsPath = ""
	}
	plan, err := pastaPlan(o)
	if err != nil {
		return daemon.Config{}, err
	}
	cfg.Plan = plan
	cfg.Relay.OutboundAddrs = append(cfg.Relay.OutboundAddrs, o.Outbound...)
	if o.Interface != "" {
		for _, v4 := range []bool{true, false} {
			if a, err := relay.OutboundAddr(o.Interface, v4); err == nil {
				cfg.Relay.OutboundAddrs = append(cfg.Relay.OutboundAddrs, a)
			}
		}
	}
	// Port forwards: explicit ones now, automatic ones by the daemon.
	for _, p := range []struct {
		proto string
		ports pastacli.Ports
		auto  *bool
	}{{"tcp", o.TCP, &cfg.AutoForwardTCP}, {"udp", o.UDP, &cfg.AutoForwardUDP}} {
		switch {
		case !p.ports.Set || p.ports.Mode == "auto":
			*p.auto = true // pasta's default
		case p.ports.Mode == "none":
		default:
			fwds, err := pastaForwards(p.proto, p.ports.Specs, plan)
			if err != nil {
				return daemon.Config{}, err
			}
			cfg.Relay.Forwards = append(cfg.Relay.Forwards, fwds...)
		}
	}
	// The other way (-T, -U): pasta's default is auto, which needs a
	// namespace the daemon can enter; handed a TAP (without root) it is
	// none.
	for _, p := range []struct {
		proto string
		ports pastacli.Ports
		auto  *bool
	}{{"tcp", o.TCPNS, &cfg.AutoNSForwardTCP}, {"udp", o.UDPNS, &cfg.AutoNSForwardUDP}} {
		switch {
		case !p.ports.Set:
			*p.auto = os.Geteuid() == 0
		case p.ports.Mode == "auto":
			*p.auto = true
		case p.ports.Mode == "none":
		default:
			for _, s := range p.ports.Specs {
				if s.Exclude {
					return daemon.Config{}, fmt.Errorf("~%d: exclusions (forward every other port) are %w", s.First, pastacli.ErrUnsupported)
				}
				for port := int(s.First); port <= int(s.Last); port++ {
					cfg.NSForwards = append(cfg.NSForwards, daemon.NSForward{Proto: p.proto, NSPort: uint16(port),
						HostPort: s.Target + uint16(port-int(s.First))})
				}
			}
		}
	}
	return cfg, nil
}

// pastaForwards are the relay's forwards of explicit -t/-u specs: each
// port of a range, to the namespace's port of the same offset; without
// an address, on the host's 0.0.0.0 and [::] (IPv6 only) for the
// families the namespace has.
func pastaForwards(proto string, specs []pastacli.PortSpec, plan nshost.Plan) ([]relay.Forward, error) {
	var out []relay.Forward
	for _, s := range specs {
		if s.Exclude {
			return nil, fmt.Errorf("~%d: exclusions (forward every other port) are %w", s.First, pastacli.ErrUnsupported)
		}
		if s.Iface != "" {
			return nil, fmt.Errorf("%%%s: binding a forward to an interface is %w", s.Iface, pastacli.ErrUnsupported)
		}
		hosts := []netip.Addr{s.Addr}
		if !s.Addr.IsValid() {
			hosts = nil
			for _, p := range plan.NS {
				if p.Addr().Is4() {
					hosts = append(hosts, netip.IPv4Unspecified())
				} else {
					hosts = append(hosts, netip.IPv6Unspecified())
				}
			}
		}
		for port := int(s.First); port <= int(s.Last); port++ {
			for _, h := range hosts {
				out = append(out, relay.Forward{Proto: proto, Host: netip.AddrPortFrom(h, uint16(port)),
					NSPort: s.Target + uint16(port-int(s.First)), V6Only: h == netip.IPv6Unspecified()})
			}
		}
	}
	return out, nil
}

// pastaPlan is the namespace's address plan: -a, -n, -g, --dns-forward
// and -D where given; otherwise the host's own address, prefix and
// gateway (of the interface of its default route), as pasta copies
// them; otherwise, on a host without a default route, tapstack's plan.
func pastaPlan(o *pastacli.Options) (nshost.Plan, error) {
	var plan nshost.Plan
	def := nshost.DefaultPlan()
	for _, fam := range []struct {
		v4     bool
		addr   netip.Addr
		gw     netip.Addr
		dns    []netip.Addr
		skip   bool
		bits   int
		defNet int // index in the default plan
	}{{v4: true, addr: o.Addr4, gw: o.Gateway4, skip: o.IPv6Only, bits: o.Prefix4, defNet: 0},
		{v4: false, addr: o.Addr6, gw: o.Gateway6, skip: o.IPv4Only, bits: 64, defNet: 1}} {
		if fam.skip {
			continue
		}
		var ns, stack netip.Prefix
		if fam.addr.IsValid() {
			bits := fam.bits
			if bits == 0 {
				bits = 24
				if !fam.v4 {
					bits = 64
				}
			}
			ns = netip.PrefixFrom(fam.addr, bits)
		} else if hostNS, hostGW, ok := hostTemplate(fam.v4); ok {
			ns, fam.gw = hostNS, hostGW
		} else {
			ns, stack = def.NS[fam.defNet], def.Stack[fam.defNet]
		}
		if !stack.IsValid() {
			gw := fam.gw
			if !gw.IsValid() {
				gw = ns.Masked().Addr().Next()
				if gw == ns.Addr() {
					gw = gw.Next()
				}
			}
			stack = netip.PrefixFrom(gw, ns.Bits())
			if !ns.Masked().Contains(gw) && !gw.IsLinkLocalUnicast() {
				return nshost.Plan{}, fmt.Errorf("gateway %s is not in the namespace's network %s", gw, ns.Masked())
			}
		}
		plan.NS = append(plan.NS, ns)
		plan.Stack = append(plan.Stack, stack)
	}
	if len(plan.NS) == 0 {
		return nshost.Plan{}, errors.New("no address family left")
	}
	if !o.NoDNS {
		for _, a := range append(append([]netip.Addr(nil), o.DNSForward...), o.DNS...) {
			if (a.Is4() && !o.IPv6Only) || (a.Is6() && !o.IPv4Only) {
				plan.DNS = append(plan.DNS, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	return plan, nil
}

// hostTemplate is the host's address and default gateway of a family on
// the interface of its default route, as pasta copies them.
func hostTemplate(v4 bool) (netip.Prefix, netip.Addr, bool) {
	family := netlink.FAMILY_V6
	if v4 {
		family = netlink.FAMILY_V4
	}
	routes, err := netlink.RouteList(nil, family)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, false
	}
	for _, r := range routes {
		if (r.Dst != nil && r.Dst.IP != nil && !r.Dst.IP.IsUnspecified()) || r.Gw == nil || r.LinkIndex == 0 {
			continue
		}
		gw, ok := netip.AddrFromSlice(r.Gw)
		if !ok {
			continue
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		addrs, _ := netlink.AddrList(l, family)
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || !ip.Unmap().IsGlobalUnicast() {
				continue
			}
			bits, _ := a.Mask.Size()
			return netip.PrefixFrom(ip.Unmap(), bits), gw.Unmap(), true
		}
	}
	return netip.Prefix{}, netip.Addr{}, false
}
