package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/internal/services"
	"github.com/tapstack/tapstack/link"
)

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
	var f daemonFlags
	f.register(fs, daemon.DefaultNetns)
	pid := fs.Int("pid", 0, "use the network namespace of process `PID` (as slirp4netns PID does) instead of --netns")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile to `FILE` until the daemon stops (for performance work)")
	traceFile := fs.String("trace", "", "write a Go execution trace to `FILE` until the daemon stops (go tool trace reads it; for latency work)")
	serve := fs.String("serve", "echo,discard", "built-in services to run, comma-separated ("+strings.Join(services.Names(), ", ")+"), or none")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tapstack up: unexpected argument %q (see -h)\n", fs.Arg(0))
		return errUsage
	}
	if *pid < 0 {
		return fmt.Errorf("--pid %d: not a process ID", *pid)
	}
	cfg, err := f.config(stderr)
	if err != nil {
		return err
	}
	if *serve != "none" && *serve != "" {
		cfg.Services = strings.Split(*serve, ",")
		for _, n := range cfg.Services {
			if _, ok := services.Port(n); !ok {
				return fmt.Errorf("--serve: unknown service %q (known: %s)", n, strings.Join(services.Names(), ", "))
			}
		}
	}
	if err := preflight(); err != nil {
		return err
	}
	if *pid != 0 {
		cfg.PID, cfg.Netns = *pid, ""
	}
	setProcs(f.procs)
	for _, p := range []struct {
		file  string
		start func(io.Writer) error
		stop  func()
	}{{*cpuprofile, pprof.StartCPUProfile, pprof.StopCPUProfile}, {*traceFile, trace.Start, trace.Stop}} {
		if p.file == "" {
			continue
		}
		out, err := os.Create(p.file)
		if err != nil {
			return err
		}
		defer out.Close()
		if err := p.start(out); err != nil {
			return fmt.Errorf("%s: %w", p.file, err)
		}
		defer p.stop()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := daemon.Start(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting: a clean stop
		}
		return err
	}
	defer d.Close()
	where := cfg.Netns
	if *pid != 0 {
		where = fmt.Sprintf("pid %d", *pid)
	}
	printReady(stdout, d, where, *pid == 0)
	return d.Wait(ctx)
}

func printReady(w io.Writer, d *daemon.Daemon, where string, named bool) {
	h, cfg := d.Host(), d.Config()
	fmt.Fprintf(w, "ready netns=%s tap=%s mtu=%d stack=%s ns=%s\n", where, h.TAP, h.MTU, joinPrefixes(h.StackAddrs), joinPrefixes(h.NSAddrs))
	var stackAddrs, dns []string
	for _, p := range h.StackAddrs {
		stackAddrs = append(stackAddrs, p.Addr().String())
	}
	for _, p := range cfg.Plan.DNS {
		dns = append(dns, p.Addr().String())
	}
	fmt.Fprintf(w, "  the namespace %q reaches the stack at %s\n", where, strings.Join(stackAddrs, " and "))
	if len(cfg.Services) > 0 {
		var ports []string
		for _, n := range cfg.Services {
			p, _ := services.Port(n)
			ports = append(ports, fmt.Sprintf("%s %d/tcp+udp", n, p))
		}
		fmt.Fprintf(w, "  services: %s\n", strings.Join(ports, ", "))
	}
	fmt.Fprintf(w, "  other destinations are relayed through this host; DNS at %s\n", strings.Join(dns, " and "))
	first := h.StackAddrs[0].Addr()
	if named {
		fmt.Fprintf(w, "  try: sudo ip netns exec %s ping -c1 %s\n", where, first)
		for _, n := range cfg.Services {
			if n == "echo" {
				fmt.Fprintf(w, "  try: echo hi | sudo ip netns exec %s nc -N %s 7\n", where, first)
			}
		}
	}
	fmt.Fprintln(w, "  stop with Ctrl-C or SIGTERM")
	fmt.Fprintf(w, "  control: tapstack forward --control %s add|rm|ls\n", d.ControlPath())
}
