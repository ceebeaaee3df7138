// Package handoff passes a TAP from the namespaces it must be opened in
// to the process that runs the stack, for the ways without root: a Go
// program cannot join a user namespace itself (it has threads), so it
// starts a helper process there (a re-exec of itself), which opens the
// TAP, configures the kernel side if asked, and hands the queue's
// descriptor back over a unix socket pair (SCM_RIGHTS) on its fd 3.
//
// The parent calls Start; the helper calls Open, then WaitGo if it must
// wait for the stack before going on (the command of a rootless run).
// It knows nothing of stacks, relays or command lines.
package handoff

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack/netns"
	"github.com/tapstack/tapstack/stack/nshost"
)

// Config is what the helper is told.
type Config struct {
	TAP     string
	MTU     int
	Offload bool
	// Configure gives the kernel side NSAddrs and default routes through
	// the first StackAddrs of each family.
	Configure  bool
	MAC        string // the kernel side's MAC ("": the kernel's)
	NSAddrs    []netip.Prefix
	StackAddrs []netip.Prefix
	// Resolv is the resolv.conf of a rootless run's command.
	Resolv string
}

// Encode is cfg as the helper's one argument.
func (cfg Config) Encode() string {
	b, _ := json.Marshal(cfg)
	return string(b)
}

// Decode reads the helper's argument.
func Decode(arg string) (Config, error) {
	var cfg Config
	if err := json.Unmarshal([]byte(arg), &cfg); err != nil {
		return Config{}, fmt.Errorf("internal: bad hand-off argument: %w", err)
	}
	return cfg, nil
}

// sockFd is the helper's end of the socket pair.
const sockFd = 3

// Parent is the parent's side of a hand-off in progress.
type Parent struct {
	// TAP is the queue the helper handed over.
	TAP  *link.TAP
	sock *os.File
}

// Start starts cmd (the helper, in the target's namespaces) with one end
// of a socket pair as its fd 3, and returns the TAP it hands back. It
// does not wait for cmd, except on failure: then the error wraps cmd's
// (an *exec.ExitError when the helper said why and exited).
func Start(cmd *exec.Cmd, cfg Config) (*Parent, error) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	parentEnd := os.NewFile(uintptr(sp[0]), "handoff-parent")
	childEnd := os.NewFile(uintptr(sp[1]), "handoff-child")
	cmd.ExtraFiles = []*os.File{childEnd} // fd 3
	if err := cmd.Start(); err != nil {
		childEnd.Close()
		parentEnd.Close()
		return nil, fmt.Errorf("start the TAP's helper: %w", err)
	}
	childEnd.Close()
	fd, rerr := recvFd(sp[0])
	if rerr != nil {
		parentEnd.Close()
		if werr := cmd.Wait(); werr != nil {
			return nil, fmt.Errorf("the TAP's helper failed: %w", werr)
		}
		return nil, fmt.Errorf("the TAP's helper handed nothing over: %w", rerr)
	}
	tap, err := link.TAPFromFd(fd, cfg.TAP, cfg.Offload)
	if err != nil {
		parentEnd.Close()
		return nil, err
	}
	return &Parent{TAP: tap, sock: parentEnd}, nil
}

// Go tells a helper waiting in WaitGo that the stack runs.
func (p *Parent) Go() error {
	_, err := p.sock.Write([]byte("go"))
	return err
}

// Close closes the parent's end of the socket pair (not the TAP).
func (p *Parent) Close() error { return p.sock.Close() }

// Open is the helper's part: in the namespaces this process is in, it
// opens the TAP, configures the kernel side if cfg says so, and hands
// the queue to the parent. The caller keeps the returned TAP open until
// it exits or execs (the descriptor is close-on-exec).
func Open(cfg Config) (*link.TAP, error) {
	var mac net.HardwareAddr
	if cfg.MAC != "" {
		var err error
		if mac, err = net.ParseMAC(cfg.MAC); err != nil {
			return nil, err
		}
	}
	tap, err := link.OpenTAP(link.TAPConfig{Name: cfg.TAP, MTU: cfg.MTU, Offload: cfg.Offload, MAC: mac})
	if err != nil {
		return nil, err
	}
	if cfg.Configure {
		ns, err := netns.OpenPID(os.Getpid())
		if err != nil {
			tap.Close()
			return nil, err
		}
		gw4, gw6 := nshost.Gateways(cfg.StackAddrs)
		err = ns.Configure(netns.LinkConfig{Name: cfg.TAP, Addrs: cfg.NSAddrs, Gateway4: gw4, Gateway6: gw6})
		ns.Close()
		if err != nil {
			tap.Close()
			return nil, err
		}
	}
	if err := unix.Sendmsg(sockFd, []byte("tap"), unix.UnixRights(tap.Fds()[0]), nil, 0); err != nil {
		tap.Close()
		return nil, fmt.Errorf("hand the TAP to the parent: %w", err)
	}
	return tap, nil
}

// WaitGo waits for the parent's Go.
func WaitGo() error {
	sock := os.NewFile(sockFd, "handoff-sock")
	defer sock.Close()
	ack := make([]byte, 2)
	if _, err := io.ReadFull(sock, ack); err != nil {
		return errors.New("the parent did not start the stack")
	}
	return nil
}

func recvFd(sock int) (int, error) {
	buf := make([]byte, 16)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return -1, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) == 0 {
		return -1, errors.New("no descriptor received")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, errors.New("no descriptor received")
	}
	return fds[0], nil
}
