// Command floor-relay is the Go twin of ../floor-relay.c: the least a
// relay can do, written the way tapstack's flow engine waits. It listens
// for UDP and TCP on 127.0.0.1:PORT and relays to SERVER:SPORT over host
// sockets, from one level-triggered epoll loop, one datagram or one read
// per wake-up, straight to the other side: two waits, two reads and two
// writes per request/response, and nothing else.
//
// Its loop waits as the engine's does: epoll_pwait without telling the
// scheduler (a raw system call), never yielding while busy (the
// scheduler then preempts the loop with a signal every 10 ms), a wait
// the scheduler knows of after 50 ms of quiet, one more GOMAXPROCS
// for the loop, and the loop's goroutine locked to its thread (-lock,
// on by default). System calls are raw
// (no allocation, no scheduler hand-off). Run side by side with the C
// twin by scripts/rr-interleaved.sh (FLOOR=1), the difference is what
// the language and its runtime cost a relay's exchange on the machine
// at hand.
//
//	go build -o floor-relay-go ./scripts/floor-relay/go
//	./floor-relay-go [-wait engine|yield|raw|sched] [-lock=false] PORT SERVER SPORT
//
// -wait picks how the loop waits: as the engine does (engine, the
// default); as the engine did before ed57998, raw for at most 8 ms with a
// runtime.Gosched at least every 8 ms while busy (yield); always raw,
// for as long as it takes, even when quiet (raw); or always in a wait
// the scheduler knows of (sched).
//
// It serves one TCP connection at a time and answers UDP to the last
// client that sent. It ends on SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	schedEvery = 8  // ms, -wait yield
	restAfter  = 50 // ms
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "floor-relay-go:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("floor-relay-go", flag.ContinueOnError)
	wait := fs.String("wait", "engine", "how the loop waits: engine, yield, raw or sched")
	lock := fs.Bool("lock", true, "lock the loop's goroutine to its thread, as the engine does")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if args = fs.Args(); len(args) != 3 {
		return fmt.Errorf("usage: floor-relay-go [-wait engine|yield|raw|sched] [-lock=false] PORT SERVER SPORT")
	}
	switch *wait {
	case "engine", "yield", "raw", "sched":
	default:
		return fmt.Errorf("-wait %q: want engine, yield, raw or sched", *wait)
	}
	port, err := strconv.ParseUint(args[0], 10, 16)
	if err != nil {
		return fmt.Errorf("port %q: %w", args[0], err)
	}
	srvIP, err := netip.ParseAddr(args[1])
	if err != nil || !srvIP.Is4() {
		return fmt.Errorf("%s is not an IPv4 address", args[1])
	}
	sport, err := strconv.ParseUint(args[2], 10, 16)
	if err != nil {
		return fmt.Errorf("port %q: %w", args[2], err)
	}
	me := &unix.SockaddrInet4{Port: int(port), Addr: [4]byte{127, 0, 0, 1}}
	srv := &unix.SockaddrInet4{Port: int(sport), Addr: srvIP.As4()}

	u, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	uo, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.SetsockoptInt(l, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return err
	}
	if err := unix.Bind(u, me); err != nil {
		return fmt.Errorf("bind udp: %w", err)
	}
	if err := unix.Bind(l, me); err != nil {
		return fmt.Errorf("bind tcp: %w", err)
	}
	if err := unix.Connect(uo, srv); err != nil {
		return fmt.Errorf("connect udp: %w", err)
	}
	if err := unix.Listen(l, 16); err != nil {
		return err
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	for _, fd := range []int{u, uo, l} {
		if err := add(ep, fd); err != nil {
			return err
		}
	}
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	done := make(chan error, 1)
	go func() {
		if *lock {
			runtime.LockOSThread() // the thread ends with the process
		}
		done <- loop(*wait, ep, u, uo, l, srv)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	fmt.Println("ready")
	select {
	case <-sig:
		return nil // the loop ends with the process
	case err := <-done:
		return err
	}
}

func add(ep, fd int) error {
	return unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
}

// loop relays until an error it cannot go on from, waiting as wait says.
func loop(wait string, ep, u, uo, l int, srv unix.Sockaddr) error {
	var (
		events     [8]unix.EpollEvent
		buf        = make([]byte, 65536)
		client     unix.RawSockaddrInet4
		clen       uint32
		c, co      = -1, -1
		start      = time.Now()
		now        int64 // ms since start
		yieldAt    int64
		busyAt     int64
		sockaddrSz = uint32(unsafe.Sizeof(client))
	)
	for {
		quiet := wait == "sched" || (wait == "engine" || wait == "yield") && now-busyAt >= restAfter
		if wait == "yield" && !quiet && now-yieldAt >= schedEvery {
			runtime.Gosched()
			yieldAt = now
		}
		var n int
		var err error
		if quiet {
			n, err = unix.EpollWait(ep, events[:], -1)
			yieldAt = -1 << 40
		} else if wait == "raw" {
			n, err = epollWait(ep, events[:], -1)
		} else if wait == "engine" {
			n, err = epollWait(ep, events[:], int(restAfter-(now-busyAt)))
		} else {
			n, err = epollWait(ep, events[:], int(schedEvery-(now-yieldAt)))
		}
		if err != nil && err != unix.EINTR {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for i := 0; i < n; i++ {
			switch fd := int(events[i].Fd); {
			case fd == u:
				clen = sockaddrSz
				if m, err := recvFrom(u, buf, &client, &clen); err == nil {
					send(uo, buf[:m])
				}
			case fd == uo:
				if m, err := recvFrom(uo, buf, nil, nil); err == nil && clen != 0 {
					sendTo(u, buf[:m], &client, clen)
				}
			case fd == l:
				a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
				if err != nil {
					continue
				}
				if c >= 0 {
					unix.Close(a)
					continue
				}
				o, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					unix.Close(a)
					continue
				}
				if err := unix.Connect(o, srv); err != nil {
					unix.Close(a)
					unix.Close(o)
					continue
				}
				unix.SetsockoptInt(a, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
				unix.SetsockoptInt(o, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
				c, co = a, o
				if err := add(ep, c); err != nil {
					return err
				}
				if err := add(ep, co); err != nil {
					return err
				}
			case fd == c || fd == co:
				to := c
				if fd == c {
					to = co
				}
				m, err := recvFrom(fd, buf, nil, nil)
				if err != nil || m == 0 { // the end of either side ends both
					unix.Close(c)
					unix.Close(co)
					c, co = -1, -1
					i = n
					continue
				}
				send(to, buf[:m])
			}
		}
		now = time.Since(start).Milliseconds()
		if n > 0 {
			busyAt = now
		}
	}
}

// epollWait is epoll_pwait without telling the scheduler.
func epollWait(ep int, events []unix.EpollEvent, ms int) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(ms), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func recvFrom(fd int, b []byte, from *unix.RawSockaddrInet4, flen *uint32) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(from)), uintptr(unsafe.Pointer(flen)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func send(fd int, b []byte) {
	unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_DONTWAIT, 0, 0)
}

func sendTo(fd int, b []byte, to *unix.RawSockaddrInet4, tlen uint32) {
	unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(to)), uintptr(tlen))
}
