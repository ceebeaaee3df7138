package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack/netns"
	"github.com/tapstack/tapstack/stack/nshost"
)

// usernsChildCmd is the hidden subcommand the rootless run re-executes
// itself as, inside the new user, network and mount namespaces.
const usernsChildCmd = "__userns-child"

// childConfig is what the parent tells the child.
type childConfig struct {
	TAP        string
	MTU        int
	NSAddrs    []netip.Prefix
	StackAddrs []netip.Prefix
	Resolv     string // resolv.conf contents for the command
	Offload    bool
}

// usernsAvailable says why unprivileged user namespaces cannot be used,
// or "" if they can.
func usernsMissing() string {
	if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && len(b) > 0 && b[0] == '0' {
		return "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0)"
	}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && len(b) > 0 && b[0] == '0' {
		return "user namespaces are disabled (sysctl user.max_user_namespaces=0)"
	}
	if err := unix.Access("/dev/net/tun", unix.R_OK|unix.W_OK); err != nil {
		return "/dev/net/tun is not readable and writable by this user (" + err.Error() + ")"
	}
	return ""
}

// runUserns is `tapstack run` without root: the command runs in a new
// user + network namespace; the TAP is opened inside and its descriptor
// handed to this process, which runs the stack and the relay, as
// slirp4netns and pasta do.
func runUserns(hf *hostFlags, rf *relayFlags, cmdArgs []string, stdout, stderr io.Writer) error {
	if why := usernsMissing(); why != "" {
		return fmt.Errorf("cannot run without root: %s", why)
	}
	cfg, err := hf.config()
	if err != nil {
		return err
	}
	if len(cfg.StackAddrs) == 0 {
		cfg.StackAddrs = nshost.DefaultStackAddrs
	}
	if len(cfg.NSAddrs) == 0 {
		cfg.NSAddrs = nshost.DefaultNSAddrs
	}
	cc := childConfig{TAP: cfg.TAP, MTU: cfg.MTU, NSAddrs: cfg.NSAddrs, StackAddrs: cfg.StackAddrs,
		Resolv: "nameserver 10.0.2.3\nnameserver fd00::3\n", Offload: cfg.Offload}
	if cc.MTU == 0 {
		cc.MTU = link.DefaultMTU
	}
	blob, _ := json.Marshal(cc)

	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	parentEnd := os.NewFile(uintptr(sp[0]), "userns-parent")
	childEnd := os.NewFile(uintptr(sp[1]), "userns-child")
	defer parentEnd.Close()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.Command(self, append([]string{usernsChildCmd, string(blob), "--"}, cmdArgs...)...)
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, stdout, stderr
	child.ExtraFiles = []*os.File{childEnd} // fd 3
	child.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		GidMappingsEnableSetgroups: false,
		Pdeathsig:                  syscall.SIGKILL,
	}
	if err := child.Start(); err != nil {
		childEnd.Close()
		return fmt.Errorf("start a user namespace: %w", err)
	}
	childEnd.Close()
	waitErr := make(chan error, 1)
	go func() { waitErr <- child.Wait() }()

	fd, err := recvFd(sp[0])
	if err != nil {
		// The child failed before handing the TAP over; it said why.
		return childExit(<-waitErr)
	}
	tap, err := link.TAPFromFd(fd, cfg.TAP, cfg.Offload)
	if err != nil {
		child.Process.Kill()
		<-waitErr
		return err
	}
	build := func(c nshost.Config) (*nshost.Host, error) { return nshost.NewOnDevices(c, tap.Devices()) }
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	s, err := startSessionWith(context.Background(), hf, rf, nil, stderr, build)
	if err != nil {
		child.Process.Kill()
		<-waitErr
		return err
	}
	defer s.Close()
	// Hold the namespace: it must outlive the command until the relay
	// has drained what the command sent.
	if nsf, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", child.Process.Pid)); err == nil {
		defer nsf.Close()
	}
	if _, err := parentEnd.Write([]byte("go")); err != nil {
		child.Process.Kill()
	}
	return waitCommand(s, rf, sigs, child.Process, waitErr, stderr)
}

func childExit(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		return exitError{code}
	}
	return err
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

// runUsernsChild runs inside the new namespaces: it opens and configures
// the TAP, hands it to the parent, waits for the stack, and becomes the
// command. It never returns on success.
func runUsernsChild(args []string, stderr io.Writer) error {
	if len(args) < 3 || args[1] != "--" {
		return errors.New("internal: bad child arguments")
	}
	var cc childConfig
	if err := json.Unmarshal([]byte(args[0]), &cc); err != nil {
		return fmt.Errorf("internal: %w", err)
	}
	cmdArgs := args[2:]
	sock := os.NewFile(3, "userns-sock")
	defer sock.Close()

	// The command's resolv.conf, visible only in this mount namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := bindResolvConf(cc.Resolv); err != nil {
		return err
	}
	tap, err := link.OpenTAP(link.TAPConfig{Name: cc.TAP, MTU: cc.MTU, Offload: cc.Offload})
	if err != nil {
		return err
	}
	ns, err := netns.OpenPID(os.Getpid())
	if err != nil {
		return err
	}
	gw4, gw6 := nshost.Gateways(cc.StackAddrs)
	if err := ns.Configure(netns.LinkConfig{Name: cc.TAP, Addrs: cc.NSAddrs, Gateway4: gw4, Gateway6: gw6}); err != nil {
		return err
	}
	ns.Close()
	fds := tap.Fds()
	if err := unix.Sendmsg(3, []byte("tap"), unix.UnixRights(fds[0]), nil, 0); err != nil {
		return fmt.Errorf("hand the TAP to the parent: %w", err)
	}
	// The parent owns the queue now; this process keeps its copy open
	// only until exec (the descriptor is close-on-exec).
	ack := make([]byte, 2)
	if _, err := io.ReadFull(sock, ack); err != nil {
		return errors.New("the parent did not start the stack")
	}
	// Wait until the stack answers, so that the command's first packet is
	// not lost.
	if len(cc.StackAddrs) > 0 {
		addr := netip.AddrPortFrom(cc.StackAddrs[0].Addr(), 9).String()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	path, err := exec.LookPath(cmdArgs[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, cmdArgs, os.Environ())
}

// bindResolvConf mounts a file with contents over /etc/resolv.conf.
func bindResolvConf(contents string) error {
	dir, err := os.MkdirTemp("", "tapstack-resolv-")
	if err != nil {
		return err
	}
	f := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(f, []byte(contents), 0o644); err != nil {
		return err
	}
	target := "/etc/resolv.conf"
	if real, err := filepath.EvalSymlinks(target); err == nil {
		target = real
	} else {
		return nil // no resolv.conf to cover
	}
	if err := unix.Mount(f, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount resolv.conf: %w", err)
	}
	// The file stays reachable through the mount; the folder can go.
	_ = os.Remove(f)
	_ = os.Remove(dir)
	return nil
}
