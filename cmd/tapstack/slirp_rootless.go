package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack/netns"
	"github.com/tapstack/tapstack/stack/nshost"
)

// slirpTAPCmd is the hidden subcommand that opens the TAP inside the
// target's user and network namespaces, started there by nsenter, for a
// slirp4netns run without root (a Go program cannot join a user namespace
// itself: it has threads).
const slirpTAPCmd = "__slirp-tap"

// slirpTAPConfig is what the opener is told.
type slirpTAPConfig struct {
	childConfig
	Configure bool
	MAC       string
}

// nsenterArgs are nsenter's arguments to enter o's target namespaces,
// user namespace included. The credentials are kept: this user is root of
// the target's user namespace (rootless podman and rootlesskit map it to
// 0), so the opener keeps its capabilities there, and such namespaces
// often deny setgroups, which nsenter would otherwise call.
func (o *slirpOptions) nsenterArgs() ([]string, error) {
	args := []string{"--preserve-credentials"}
	if o.netnsType == "pid" {
		args = append(args, "--target", o.target, "--net")
		if o.usernsPath == "" {
			args = append(args, "--user")
		}
	} else {
		args = append(args, "--net="+o.target)
		if o.usernsPath == "" {
			return nil, errors.New("--netns-type=path without root needs --userns-path (the user namespace that owns the network namespace)")
		}
	}
	if o.usernsPath != "" {
		args = append(args, "--user="+o.usernsPath)
	}
	return args, nil
}

// openTAPInTarget runs the opener in the target's namespaces and returns
// the TAP it hands back.
func openTAPInTarget(o *slirpOptions, cfg slirpTAPConfig) (*link.TAP, error) {
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, errors.New("without root, needs util-linux's nsenter on PATH to enter the target's user namespace")
	}
	nsArgs, err := o.nsenterArgs()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	blob, _ := json.Marshal(cfg)
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	parentEnd := os.NewFile(uintptr(sp[0]), "slirp-parent")
	childEnd := os.NewFile(uintptr(sp[1]), "slirp-child")
	defer parentEnd.Close()
	cmd := exec.Command(nsenter, append(nsArgs, self, slirpTAPCmd, string(blob))...)
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = []*os.File{childEnd} // fd 3
	if err := cmd.Start(); err != nil {
		childEnd.Close()
		return nil, fmt.Errorf("enter the target's namespaces: %w", err)
	}
	childEnd.Close()
	fd, rerr := recvFd(sp[0])
	werr := cmd.Wait()
	if rerr != nil {
		if werr != nil {
			return nil, fmt.Errorf("cannot join the namespace of %s: %w", o.target, werr)
		}
		return nil, fmt.Errorf("cannot join the namespace of %s: %w", o.target, rerr)
	}
	return link.TAPFromFd(fd, cfg.TAP, cfg.Offload)
}

// runSlirpTAP is the opener: inside the target's namespaces it creates
// the TAP (and configures the kernel side with -c), hands the queue to
// the parent over fd 3, and exits.
func runSlirpTAP(args []string, stderr io.Writer) error {
	if len(args) != 1 {
		return errors.New("internal: bad opener arguments")
	}
	var cfg slirpTAPConfig
	if err := json.Unmarshal([]byte(args[0]), &cfg); err != nil {
		return fmt.Errorf("internal: %w", err)
	}
	var mac net.HardwareAddr
	if cfg.MAC != "" {
		var err error
		if mac, err = net.ParseMAC(cfg.MAC); err != nil {
			return err
		}
	}
	tap, err := link.OpenTAP(link.TAPConfig{Name: cfg.TAP, MTU: cfg.MTU, Offload: cfg.Offload, MAC: mac})
	if err != nil {
		return err
	}
	defer tap.Close()
	if cfg.Configure {
		ns, err := netns.OpenPID(os.Getpid())
		if err != nil {
			return err
		}
		gw4, gw6 := nshost.Gateways(cfg.StackAddrs)
		err = ns.Configure(netns.LinkConfig{Name: cfg.TAP, Addrs: cfg.NSAddrs, Gateway4: gw4, Gateway6: gw6})
		ns.Close()
		if err != nil {
			return err
		}
	}
	if err := unix.Sendmsg(3, []byte("tap"), unix.UnixRights(tap.Fds()[0]), nil, 0); err != nil {
		return fmt.Errorf("hand the TAP to the parent: %w", err)
	}
	return nil
}

// slirpBuild returns how serveSlirp builds its host: as root, nshost
// joins the namespace itself; without root, the opener does it.
func slirpBuild(o *slirpOptions, cfg slirpTAPConfig) buildFunc {
	if os.Geteuid() == 0 {
		return nshost.New
	}
	return func(c nshost.Config) (*nshost.Host, error) {
		tap, err := openTAPInTarget(o, cfg)
		if err != nil {
			return nil, err
		}
		return nshost.NewOnDevices(c, tap.Devices())
	}
}
