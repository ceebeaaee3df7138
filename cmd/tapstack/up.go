package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tapstack/tapstack/cmd/internal/services"
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

// hostFlags are the flags shared by every command that builds a host in a
// namespace.
type hostFlags struct {
	netns      string
	tap        string
	mtu        int
	addrs      prefixList
	nsAddrs    prefixList
	maxSockets int
}

func (h *hostFlags) register(fs *flag.FlagSet, defaultNetns string) {
	fs.StringVar(&h.netns, "netns", defaultNetns, "network namespace `NAME` (created if missing, deleted on exit only if created)")
	fs.StringVar(&h.tap, "tap", nshost.DefaultTAP, "TAP interface `NAME` inside the namespace")
	fs.IntVar(&h.mtu, "mtu", link.DefaultMTU, "IP MTU of the TAP (1280..65520)")
	fs.Var(&h.addrs, "addr", "stack address `CIDR`, repeatable (default 10.0.2.2/24 and fd00::2/64)")
	fs.Var(&h.nsAddrs, "ns-addr", "namespace-side address `CIDR`, repeatable (default 10.0.2.100/24 and fd00::100/64)")
	fs.IntVar(&h.maxSockets, "max-sockets", stack.DefaultMaxSockets, "capacity of the stack's socket table")
}

func (h *hostFlags) config() (nshost.Config, error) {
	if h.maxSockets < 1 {
		return nshost.Config{}, fmt.Errorf("--max-sockets %d: must be at least 1", h.maxSockets)
	}
	return nshost.Config{
		Netns: h.netns, TAP: h.tap, MTU: h.mtu,
		StackAddrs: h.addrs, NSAddrs: h.nsAddrs, MaxSockets: h.maxSockets,
	}, nil
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
	hf.register(fs, "tapstack")
	serve := fs.String("serve", "echo,discard", "built-in services to run, comma-separated ("+strings.Join(services.Names(), ", ")+"), or none")
	readyTimeout := fs.Duration("ready-timeout", 10*time.Second, "how long to wait for the namespace to reach the stack")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tapstack up: unexpected argument %q (see -h)\n", fs.Arg(0))
		return errUsage
	}
	cfg, err := hf.config()
	if err != nil {
		return err
	}
	var names []string
	if *serve != "none" && *serve != "" {
		names = strings.Split(*serve, ",")
		for _, n := range names {
			if _, ok := services.Ports[n]; !ok {
				return fmt.Errorf("--serve: unknown service %q (known: %s)", n, strings.Join(services.Names(), ", "))
			}
		}
	}
	if err := preflight(); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	h, err := nshost.New(cfg)
	if err != nil {
		return err
	}
	defer h.Close()
	srv, err := services.Start(h.Stack, names...)
	if err != nil {
		return err
	}
	defer srv.Close()

	rctx, cancel := context.WithTimeout(ctx, *readyTimeout)
	err = h.WaitReady(rctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting: a clean stop
		}
		return err
	}
	printReady(stdout, h, cfg.Netns, names)

	<-ctx.Done()
	fmt.Fprintln(stderr, "tapstack up: stopping")
	return nil
}

func printReady(w io.Writer, h *nshost.Host, netns string, names []string) {
	fmt.Fprintf(w, "ready netns=%s tap=%s mtu=%d stack=%s ns=%s\n", netns, h.TAP, h.MTU, joinPrefixes(h.StackAddrs), joinPrefixes(h.NSAddrs))
	fmt.Fprintf(w, "  the namespace %q reaches the stack at %s\n", netns, joinAddrs(h.StackAddrs))
	if len(names) > 0 {
		var ports []string
		for _, n := range names {
			ports = append(ports, fmt.Sprintf("%s %d/tcp+udp", n, services.Ports[n]))
		}
		fmt.Fprintf(w, "  services: %s\n", strings.Join(ports, ", "))
	}
	first := h.StackAddrs[0].Addr()
	fmt.Fprintf(w, "  try: sudo ip netns exec %s ping -c1 %s\n", netns, first)
	if _, ok := services.Ports["echo"]; ok && contains(names, "echo") {
		fmt.Fprintf(w, "  try: echo hi | sudo ip netns exec %s nc -N %s 7\n", netns, first)
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
