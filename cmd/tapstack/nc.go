package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/internal/ncat"
	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack/nshost"
)

func runNC(args []string, stdout, stderr io.Writer) error {
	return runNCWith(args, os.Stdin, stdout, stderr)
}

func runNCWith(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("nc", "[HOST] PORT", stderr)
	var hf hostFlags
	hf.register(fs, daemon.DefaultNetns)
	var o ncat.Options
	var dns addrPortList
	fs.BoolVar(&o.V4, "4", false, "IPv4 only (the default unless HOST is IPv6)")
	fs.BoolVar(&o.V6, "6", false, "IPv6")
	fs.BoolVar(&o.UDP, "u", false, "UDP instead of TCP")
	fs.BoolVar(&o.Listen, "l", false, "listen on the wildcard address of the family for one peer")
	fs.BoolVar(&o.Broadcast, "b", false, "allow broadcast (SO_BROADCAST)")
	fs.BoolVar(&o.Verbose, "v", false, "say on stderr what happens")
	fs.IntVar(&o.LocalPort, "p", 0, "local `PORT` to bind")
	fs.Float64Var(&o.Wait, "w", 0, "connect timeout and idle timeout in `SECONDS` (0: none; UDP waits 1 s for replies after stdin ends)")
	fs.Var(&dns, "dns", "DNS server `ADDR` (IP or IP:port) for host names, resolved over the stack; repeatable")
	if err := parse(fs, args); err != nil {
		return err
	}
	o.DNS = dns
	if err := positional(&o, fs.Args()); err != nil {
		fmt.Fprintf(stderr, "tapstack nc: %v (see -h)\n", err)
		return errUsage
	}
	if err := preflight(); err != nil {
		return err
	}
	setProcs(hf.procs)
	cfg, pcap, err := hf.nshost(stderr)
	if err != nil {
		return err
	}
	if pcap != nil {
		defer pcap.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	h, err := nshost.New(cfg)
	if err != nil {
		return err
	}
	defer h.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = h.WaitReady(rctx)
	cancel()
	if err != nil {
		return err
	}
	if err := sockets.SetResolver(h.Stack, sockets.ResolverConfig{Servers: o.DNS}); err != nil {
		return err
	}
	err = o.Run(ctx, h.Stack, stdin, stdout, stderr)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	if errors.Is(err, sockets.EAI_NONAME) && len(o.DNS) == 0 {
		err = fmt.Errorf("%w (no --dns server was given)", err)
	}
	if errors.Is(err, syscall.EACCES) && !o.Broadcast {
		err = fmt.Errorf("%w; use -b", err)
	}
	return withErrnoName(err)
}

func positional(o *ncat.Options, args []string) error {
	if o.V4 && o.V6 {
		return errors.New("-4 and -6 exclude each other")
	}
	switch {
	case o.Listen && len(args) == 1:
		args = []string{"", args[0]}
	case len(args) != 2:
		if o.Listen {
			return errors.New("want PORT (or HOST PORT) with -l")
		}
		return errors.New("want HOST PORT")
	}
	o.Host = args[0]
	p, err := strconv.Atoi(args[1])
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("port %q: want a number 0-65535", args[1])
	}
	o.Port = p
	if o.LocalPort < 0 || o.LocalPort > 65535 {
		return fmt.Errorf("-p %d: want a number 0-65535", o.LocalPort)
	}
	if o.Wait < 0 {
		return fmt.Errorf("-w %v: must not be negative", o.Wait)
	}
	return nil
}

// addrPortList is a repeatable IP or IP:port flag (port 53 by default).
type addrPortList []netip.AddrPort

func (l *addrPortList) String() string {
	var s []string
	for _, a := range *l {
		s = append(s, a.String())
	}
	return strings.Join(s, ",")
}

func (l *addrPortList) Set(v string) error {
	if ap, err := netip.ParseAddrPort(v); err == nil {
		*l = append(*l, ap)
		return nil
	}
	ip, err := netip.ParseAddr(v)
	if err != nil {
		return fmt.Errorf("%q is not an IP address or IP:port", v)
	}
	*l = append(*l, netip.AddrPortFrom(ip, 53))
	return nil
}

// withErrnoName appends the errno's name (ECONNREFUSED …) to an error.
func withErrnoName(err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if name := unix.ErrnoName(e); name != "" {
			return fmt.Errorf("%w (%s)", err, name)
		}
	}
	return err
}
