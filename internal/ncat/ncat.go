// Package ncat is the engine of tapstack nc: a netcat on a tapstack
// stack's sockets, connecting or listening, over TCP or UDP. It knows
// nothing of flags or namespaces.
package ncat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"time"

	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack"
)

// Options are what nc was asked to do.
type Options struct {
	V4, V6, UDP, Listen, Broadcast, Verbose bool
	// LocalPort is the local port to bind (0: any).
	LocalPort int
	// DNS are the DNS servers for host names.
	DNS []netip.AddrPort
	// Wait is the connect and idle timeout in seconds (0: none).
	Wait float64
	// Host and Port are the peer (or, with Listen, where to listen).
	Host string
	Port int
}

// family is the family -4/-6 ask for, else the host's if it is numeric,
// else AF_UNSPEC (a name may have both).
func (o *Options) family() sockets.Family {
	switch {
	case o.V6:
		return sockets.AF_INET6
	case o.V4:
		return sockets.AF_INET
	}
	if ip, err := netip.ParseAddr(o.Host); err == nil {
		if ip.Is4() {
			return sockets.AF_INET
		}
		return sockets.AF_INET6
	}
	if o.Listen || o.Host == "" {
		return sockets.AF_INET
	}
	return sockets.AF_UNSPEC
}

// Run connects to Host:Port (or listens, with Listen) on st and moves
// stdin to the peer and what the peer sends to stdout.
func (o *Options) Run(ctx context.Context, st *stack.Stack, stdin io.Reader, stdout, stderr io.Writer) error {
	typ := sockets.SOCK_STREAM
	if o.UDP {
		typ = sockets.SOCK_DGRAM
	}
	logf := func(format string, args ...any) {
		if o.Verbose {
			fmt.Fprintf(stderr, "tapstack nc: "+format+"\n", args...)
		}
	}
	wait := time.Duration(o.Wait * float64(time.Second))
	if o.Listen {
		return o.runListen(ctx, st, typ, stdin, stdout, wait, logf)
	}
	ais, err := sockets.GetAddrInfoContext(ctx, st, o.Host, strconv.Itoa(o.Port), o.family(), typ, 0, 0)
	if err != nil {
		return err
	}
	var s *sockets.Socket
	for _, ai := range ais {
		s, err = o.dial(ctx, st, ai, wait)
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
	if o.UDP {
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
func (o *Options) dial(ctx context.Context, st *stack.Stack, ai sockets.AddrInfo, wait time.Duration) (*sockets.Socket, error) {
	s, err := sockets.New(st, ai.Family, ai.Type, 0)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	if o.Broadcast {
		if err := s.SetSockOpt(sockets.SOL_SOCKET, sockets.SO_BROADCAST, 1); err != nil {
			s.Close()
			return nil, err
		}
	}
	if o.LocalPort != 0 {
		host := ""
		if ai.Family == sockets.AF_INET6 {
			host = "::"
		}
		if err := s.Bind(sockets.Addr{Host: host, Port: o.LocalPort}); err != nil {
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

func (o *Options) runListen(ctx context.Context, st *stack.Stack, typ sockets.Type, stdin io.Reader, stdout io.Writer, wait time.Duration, logf func(string, ...any)) error {
	fam := o.family()
	if fam == sockets.AF_UNSPEC {
		fam = sockets.AF_INET
	}
	s, err := sockets.New(st, fam, typ, 0)
	if err != nil {
		return err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	if o.Broadcast {
		if err := s.SetSockOpt(sockets.SOL_SOCKET, sockets.SO_BROADCAST, 1); err != nil {
			return err
		}
	}
	host := o.Host
	if host == "" && fam == sockets.AF_INET6 {
		host = "::"
	}
	if err := s.Bind(sockets.Addr{Host: host, Port: o.Port}); err != nil {
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
