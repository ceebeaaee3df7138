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

	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack/nshost"
)

// ncOptions are tapstack nc's own flags.
type ncOptions struct {
	v4, v6, udp, listen, broadcast, verbose bool
	localPort                               int
	dns                                     addrPortList
	wait                                    float64
	host                                    string
	port                                    int
}

func runNC(args []string, stdout, stderr io.Writer) error {
	return runNCWith(args, os.Stdin, stdout, stderr)
}

func runNCWith(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("nc", "[HOST] PORT", stderr)
	var hf hostFlags
	hf.register(fs, "tapstack")
	var o ncOptions
	fs.BoolVar(&o.v4, "4", false, "IPv4 only (the default unless HOST is IPv6)")
	fs.BoolVar(&o.v6, "6", false, "IPv6")
	fs.BoolVar(&o.udp, "u", false, "UDP instead of TCP")
	fs.BoolVar(&o.listen, "l", false, "listen on the wildcard address of the family for one peer")
	fs.BoolVar(&o.broadcast, "b", false, "allow broadcast (SO_BROADCAST)")
	fs.BoolVar(&o.verbose, "v", false, "say on stderr what happens")
	fs.IntVar(&o.localPort, "p", 0, "local `PORT` to bind")
	fs.Float64Var(&o.wait, "w", 0, "connect timeout and idle timeout in `SECONDS` (0: none; UDP waits 1 s for replies after stdin ends)")
	fs.Var(&o.dns, "dns", "DNS server `ADDR` (IP or IP:port) for host names, resolved over the stack; repeatable")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := o.positional(fs.Args()); err != nil {
		fmt.Fprintf(stderr, "tapstack nc: %v (see -h)\n", err)
		return errUsage
	}
	cfg, err := hf.config()
	if err != nil {
		return err
	}
	if err := preflight(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pcap, err := hf.capture(&cfg)
	if err != nil {
		return err
	}
	if !cfg.Impair.IsZero() {
		fmt.Fprintf(stderr, "tapstack nc: %s\n", impairLine(cfg))
	}
	if pcap != nil {
		defer pcap.Close()
	}
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
	if err := sockets.SetResolver(h.Stack, sockets.ResolverConfig{Servers: o.dns}); err != nil {
		return err
	}
	err = o.run(ctx, h, stdin, stdout, stderr)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	if errors.Is(err, sockets.EAI_NONAME) && len(o.dns) == 0 {
		err = fmt.Errorf("%w (no --dns server was given)", err)
	}
	if errors.Is(err, syscall.EACCES) && !o.broadcast {
		err = fmt.Errorf("%w; use -b", err)
	}
	return withErrnoName(err)
}

func (o *ncOptions) positional(args []string) error {
	if o.v4 && o.v6 {
		return errors.New("-4 and -6 exclude each other")
	}
	switch {
	case o.listen && len(args) == 1:
		args = []string{"", args[0]}
	case len(args) != 2:
		if o.listen {
			return errors.New("want PORT (or HOST PORT) with -l")
		}
		return errors.New("want HOST PORT")
	}
	o.host = args[0]
	p, err := strconv.Atoi(args[1])
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("port %q: want a number 0-65535", args[1])
	}
	o.port = p
	if o.localPort < 0 || o.localPort > 65535 {
		return fmt.Errorf("-p %d: want a number 0-65535", o.localPort)
	}
	if o.wait < 0 {
		return fmt.Errorf("-w %v: must not be negative", o.wait)
	}
	return nil
}

// family is the family -4/-6 ask for, else the host's if it is numeric,
// else AF_UNSPEC (a name may have both).
func (o *ncOptions) family() sockets.Family {
	switch {
	case o.v6:
		return sockets.AF_INET6
	case o.v4:
		return sockets.AF_INET
	}
	if ip, err := netip.ParseAddr(o.host); err == nil {
		if ip.Is4() {
			return sockets.AF_INET
		}
		return sockets.AF_INET6
	}
	if o.listen || o.host == "" {
		return sockets.AF_INET
	}
	return sockets.AF_UNSPEC
}

func (o *ncOptions) run(ctx context.Context, h *nshost.Host, stdin io.Reader, stdout, stderr io.Writer) error {
	typ := sockets.SOCK_STREAM
	if o.udp {
		typ = sockets.SOCK_DGRAM
	}
	logf := func(format string, args ...any) {
		if o.verbose {
			fmt.Fprintf(stderr, "tapstack nc: "+format+"\n", args...)
		}
	}
	wait := time.Duration(o.wait * float64(time.Second))
	if o.listen {
		return o.runListen(ctx, h, typ, stdin, stdout, wait, logf)
	}
	ais, err := sockets.GetAddrInfoContext(ctx, h.Stack, o.host, strconv.Itoa(o.port), o.family(), typ, 0, 0)
	if err != nil {
		return err
	}
	var s *sockets.Socket
	for _, ai := range ais {
		s, err = o.dial(ctx, h, ai, wait)
		if err == nil {
			break
		}
		logf("%v", err)
	}
	if err != nil {
		return err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	logf("connected to %v", ai0(s))
	if o.udp {
		return pumpDatagrams(s, stdin, stdout, wait)
	}
	return pumpStream(s, stdin, stdout, wait)
}

func ai0(s *sockets.Socket) string {
	a, err := s.GetPeerName()
	if err != nil {
		return "?"
	}
	return a.String()
}

// dial makes one socket and connects it to ai.
func (o *ncOptions) dial(ctx context.Context, h *nshost.Host, ai sockets.AddrInfo, wait time.Duration) (*sockets.Socket, error) {
	s, err := sockets.New(h.Stack, ai.Family, ai.Type, 0)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	if o.broadcast {
		if err := s.SetSockOpt(sockets.SOL_SOCKET, sockets.SO_BROADCAST, 1); err != nil {
			s.Close()
			return nil, err
		}
	}
	if o.localPort != 0 {
		host := ""
		if ai.Family == sockets.AF_INET6 {
			host = "::"
		}
		if err := s.Bind(sockets.Addr{Host: host, Port: o.localPort}); err != nil {
			s.Close()
			return nil, err
		}
	}
	if wait > 0 {
		s.SetTimeout(wait)
	}
	if err := s.Connect(ai.Addr); err != nil {
		s.Close()
		return nil, err
	}
	s.SetTimeout(sockets.Blocking)
	return s, nil
}

func (o *ncOptions) runListen(ctx context.Context, h *nshost.Host, typ sockets.Type, stdin io.Reader, stdout io.Writer, wait time.Duration, logf func(string, ...any)) error {
	fam := o.family()
	if fam == sockets.AF_UNSPEC {
		fam = sockets.AF_INET
	}
	s, err := sockets.New(h.Stack, fam, typ, 0)
	if err != nil {
		return err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	if o.broadcast {
		if err := s.SetSockOpt(sockets.SOL_SOCKET, sockets.SO_BROADCAST, 1); err != nil {
			return err
		}
	}
	host := o.host
	if host == "" && fam == sockets.AF_INET6 {
		host = "::"
	}
	if err := s.Bind(sockets.Addr{Host: host, Port: o.port}); err != nil {
		return err
	}
	la, _ := s.GetSockName()
	if typ == sockets.SOCK_STREAM {
		if err := s.Listen(1); err != nil {
			return err
		}
		logf("listening on %v", la)
		c, peer, err := s.Accept()
		if err != nil {
			return err
		}
		defer c.Close()
		stopc := context.AfterFunc(ctx, func() { c.Close() })
		defer stopc()
		logf("connection from %v", peer)
		s.Close()
		return pumpStream(c, stdin, stdout, wait)
	}
	logf("listening on %v/udp", la)
	b, peer, err := s.RecvFrom(65536, 0)
	if err != nil {
		return err
	}
	logf("datagram from %v", peer)
	if _, err := stdout.Write(b); err != nil {
		return err
	}
	if err := s.Connect(peer); err != nil {
		return err
	}
	return pumpDatagrams(s, stdin, stdout, wait)
}

// pumpStream copies stdin to the peer (half-closing at EOF) and the peer
// to stdout until the peer ends its side.
func pumpStream(s *sockets.Socket, stdin io.Reader, stdout io.Writer, idle time.Duration) error {
	var sendErr error
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		buf := make([]byte, 32<<10)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				if _, serr := s.SendAll(buf[:n], 0); serr != nil {
					if !errors.Is(serr, sockets.ErrSocketClosed) {
						sendErr = serr
					}
					return
				}
			}
			if err != nil {
				_ = s.Shutdown(sockets.SHUT_WR)
				return
			}
		}
	}()
	if idle > 0 {
		s.SetTimeout(idle)
	}
	buf := make([]byte, 64<<10)
	var recvErr error
	for {
		n, err := s.RecvInto(buf, 0)
		if err != nil {
			recvErr = err
			break
		}
		if n == 0 {
			break
		}
		if _, err := stdout.Write(buf[:n]); err != nil {
			recvErr = err
			break
		}
	}
	// The peer is done. Input already at hand still goes out, but a
	// stdin that stays open (a terminal) does not keep us for long.
	select {
	case <-sent:
		s.Close()
		if recvErr != nil {
			return recvErr
		}
		return sendErr
	case <-time.After(time.Second):
		s.Close()
		return recvErr
	}
}

// pumpDatagrams sends stdin in datagrams and prints what comes back, until
// stdin ends and no datagram came for the idle time (1 s by default).
func pumpDatagrams(s *sockets.Socket, stdin io.Reader, stdout io.Writer, idle time.Duration) error {
	if idle <= 0 {
		idle = time.Second
	}
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 65507)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				if _, serr := s.Send(buf[:n], 0); serr != nil {
					done <- serr
					return
				}
			}
			if err != nil {
				done <- nil
				return
			}
		}
	}()
	stdinDone := false
	buf := make([]byte, 65536)
	for {
		if stdinDone {
			s.SetTimeout(idle)
		} else {
			s.SetTimeout(100 * time.Millisecond)
		}
		n, err := s.RecvInto(buf, 0)
		if err == nil {
			if _, werr := stdout.Write(buf[:n]); werr != nil {
				return werr
			}
			continue
		}
		var ne interface{ Timeout() bool }
		if !errors.As(err, &ne) || !ne.Timeout() {
			return err
		}
		if stdinDone {
			return nil
		}
		select {
		case serr := <-done:
			if serr != nil {
				return serr
			}
			stdinDone = true
		default:
		}
	}
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
