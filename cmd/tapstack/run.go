package main

import (
	"context"
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

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/internal/handoff"
	"github.com/tapstack/tapstack/stack/nshost"
)

// exitError carries a command's exit status out of run.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// usernsChildCmd is the hidden subcommand the rootless run re-executes
// itself as, inside the new user, network and mount namespaces.
const usernsChildCmd = "__userns-child"

func runRun(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "-- CMD [ARGS...]", stderr)
	var f daemonFlags
	f.register(fs, "")
	userns := fs.Bool("userns", false, "use a user + network namespace even as root (the way without root)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cmdArgs := fs.Args()
	if len(cmdArgs) == 0 {
		fmt.Fprintln(stderr, "tapstack run: want a command after -- (see -h)")
		return errUsage
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return preflight()
	}
	rootless := *userns || os.Geteuid() != 0
	if rootless && f.netns != "" {
		return errors.New("--netns does not go with a user namespace run (the namespace has no name)")
	}
	cfg, err := f.config(stderr)
	if err != nil {
		return err
	}
	setProcs(f.procs)
	// Signals go to the command; the command's end ends the run.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if rootless {
		cfg.Netns, cfg.Name = "", nshost.UniqueName("run-")
		return runUserns(cfg, cmdArgs, sigs, stdout, stderr)
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		return errors.New("needs iproute2's ip on PATH to enter the namespace")
	}
	if cfg.Netns == "" {
		cfg.Netns = nshost.UniqueName("tapstack-run-")
	}
	d, err := daemon.Start(context.Background(), cfg)
	if err != nil {
		return err
	}
	defer d.Close()
	cmd := exec.Command(ipPath, append([]string{"netns", "exec", cfg.Netns}, cmdArgs...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmdArgs[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return waitCommand(d, sigs, cmd.Process, done)
}

// waitCommand passes signals to the command until it exits, then drains
// the relay (what the command sent is still in the namespace's kernel
// and in the stack), and returns the command's status. A daemon that
// ends by itself (the TAP deleted) ends the run with an error.
func waitCommand(d *daemon.Daemon, sigs <-chan os.Signal, p *os.Process, done <-chan error) error {
	for {
		select {
		case sig := <-sigs:
			_ = p.Signal(sig)
		case <-d.Done():
			_ = p.Kill()
			<-done
			return d.Err()
		case err := <-done:
			d.Drain()
			return childExit(err)
		}
	}
}

// usernsMissing says why unprivileged user namespaces cannot be used, or
// "" if they can.
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
// user + network namespace; the TAP is opened inside and handed to this
// process, which runs the daemon, as slirp4netns and pasta do.
func runUserns(cfg daemon.Config, cmdArgs []string, sigs <-chan os.Signal, stdout, stderr io.Writer) error {
	if why := usernsMissing(); why != "" {
		return fmt.Errorf("cannot run without root: %s", why)
	}
	hc := handoff.Config{TAP: cfg.TAP, MTU: cfg.MTU, Offload: !cfg.NoOffload, Configure: true,
		NSAddrs: cfg.Plan.NS, StackAddrs: cfg.Plan.Stack, Resolv: cfg.Plan.ResolvConf()}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.Command(self, append([]string{usernsChildCmd, hc.Encode(), "--"}, cmdArgs...)...)
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, stdout, stderr
	child.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		GidMappingsEnableSetgroups: false,
		Pdeathsig:                  syscall.SIGKILL,
	}
	p, err := handoff.Start(child, hc)
	if err != nil {
		return childExit(err) // the child said why
	}
	defer p.Close()
	waitErr := make(chan error, 1)
	go func() { waitErr <- child.Wait() }()
	cfg.Devices = p.TAP.Devices()
	d, err := daemon.Start(context.Background(), cfg)
	if err != nil {
		child.Process.Kill()
		<-waitErr
		return err
	}
	defer d.Close()
	// Hold the namespace: it must outlive the command until the relay
	// has drained what the command sent.
	if nsf, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", child.Process.Pid)); err == nil {
		defer nsf.Close()
	}
	if err := p.Go(); err != nil {
		child.Process.Kill()
	}
	return waitCommand(d, sigs, child.Process, waitErr)
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

// runUsernsChild runs inside the new namespaces: it opens and configures
// the TAP, hands it to the parent, waits for the stack, and becomes the
// command. It never returns on success.
func runUsernsChild(args []string) error {
	if len(args) < 3 || args[1] != "--" {
		return errors.New("internal: bad child arguments")
	}
	cfg, err := handoff.Decode(args[0])
	if err != nil {
		return err
	}
	cmdArgs := args[2:]
	// The command's resolv.conf, visible only in this mount namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := bindResolvConf(cfg.Resolv); err != nil {
		return err
	}
	tap, err := handoff.Open(cfg)
	if err != nil {
		return err
	}
	defer tap.Close() // open until exec, which closes it (close-on-exec)
	if err := handoff.WaitGo(); err != nil {
		return err
	}
	// Wait until the stack answers, so that the command's first packet is
	// not lost.
	if len(cfg.StackAddrs) > 0 {
		addr := netip.AddrPortFrom(cfg.StackAddrs[0].Addr(), 9).String()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
			if err == nil {
				c.Close()
			}
			if nshost.Answered(err) {
				break
			}
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
	target, err := filepath.EvalSymlinks("/etc/resolv.conf")
	if err != nil {
		return nil // no resolv.conf to cover
	}
	dir, err := os.MkdirTemp("", "tapstack-resolv-")
	if err != nil {
		return err
	}
	f := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(f, []byte(contents), 0o644); err != nil {
		return err
	}
	if err := unix.Mount(f, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount resolv.conf: %w", err)
	}
	// The file stays reachable through the mount; the folder can go.
	_ = os.Remove(f)
	_ = os.Remove(dir)
	return nil
}
