package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/internal/handoff"
	"github.com/tapstack/tapstack/internal/sandbox"
	"github.com/tapstack/tapstack/internal/slirpapi"
	"github.com/tapstack/tapstack/internal/slirpcli"
	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/stack/nshost"
)

// runSlirp is `tapstack slirp4netns`, and tapstack invoked as slirp4netns:
// slirp4netns's command line on a tapstack host. It exits 1 on bad
// arguments and on a namespace that cannot be joined, as slirp4netns.
func runSlirp(argv0 string, args []string, stdout, stderr io.Writer) int {
	o, err := slirpcli.Parse(args)
	switch {
	case errors.Is(err, slirpcli.ErrHelp):
		fmt.Fprintf(stdout, slirpcli.Usage, argv0)
		return 0
	case errors.Is(err, slirpcli.ErrVersion):
		// The lines slirp4netns prints, which its users parse (its test
		// suite reads SLIRP_CONFIG_VERSION_MAX to decide what to test):
		// tapstack does what libslirp 4.7's configuration version 4
		// offers (outbound addresses, --disable-dns, the MAC address).
		fmt.Fprintf(stdout, "slirp4netns version %s\ncommit: tapstack-%s\nlibslirp: %s\nSLIRP_CONFIG_VERSION_MAX: %d\ntapstack: %s\n",
			slirpcli.Version, version, slirpcli.LibVersion, slirpcli.ConfigVersionMax, version)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		fmt.Fprintf(stderr, slirpcli.Usage, argv0)
		return 1
	}
	// Whether the exit FD is open is known only now: once the daemon
	// runs, its own descriptors may take a closed one's number. The Go
	// runtime's poller may have taken it already (an epoll and an
	// eventfd, made before main): neither ever hangs up, so no caller
	// passed one to be watched.
	if o.ExitFD >= 0 {
		l, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", o.ExitFD))
		if err != nil || l == "anon_inode:[eventpoll]" || l == "anon_inode:[eventfd]" {
			o.ExitFDClosed = true
		}
	}
	if o.Sandbox && os.Getenv(sandbox.PrivateMountsEnv) == "" {
		err := execSandboxed(o, args) // returns only on failure
		fmt.Fprintf(stderr, "%s: --enable-sandbox: %v\n", argv0, err)
		return 1
	}
	for _, w := range o.Warnings {
		fmt.Fprintf(stderr, "WARNING: %s\n", w)
	}
	if err := serveSlirp(o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		return 1
	}
	return 0
}

// serveSlirp runs the daemon until the exit FD closes, a signal comes,
// or the namespace goes away.
func serveSlirp(o *slirpcli.Options, stdout, stderr io.Writer) error {
	if os.Geteuid() == 0 {
		if err := preflight(); err != nil {
			return err
		}
	} else if why := usernsMissing(); why != "" {
		return fmt.Errorf("cannot run without root: %s", why)
	}
	plan := o.Plan()
	log, _ := daemon.NewLogger(stderr, "text", "", false)
	cfg := daemon.Config{TAP: o.TAP, MTU: o.MTU, Plan: plan, NoConfigure: !o.Configure, MAC: o.MAC, Log: log,
		Relay: relay.Config{HostLoopback: !o.NoHostLoopback}}
	if o.NoDNS {
		// As slirp4netns: nothing answers at the DNS address, and what is
		// sent there goes nowhere.
		full := *o
		full.NoDNS = false
		cfg.Relay.Silent = nshost.Addrs(full.Plan().DNS)
	}
	if o.NetnsType == "pid" {
		cfg.PID, _ = strconv.Atoi(o.Target)
	} else {
		cfg.NetnsPath = o.Target
	}
	var err error
	if cfg.Relay.OutboundAddrs, err = outboundAddrs(o.Outbound4, o.Outbound6); err != nil {
		return err
	}
	setProcs(0)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Geteuid() != 0 {
		// Without root the helper opens the TAP in the target's
		// namespaces, user namespace included, and hands it over.
		nsArgs, ok := nsenterArgs(cfg.PID, cfg.NetnsPath, o.UsernsPath, true)
		if !ok {
			return errors.New("--netns-type=path without root needs --userns-path (the user namespace that owns the network namespace)")
		}
		if cfg.Devices, err = handOff(cfg, o.Configure, nsArgs, o.Target); err != nil {
			return err
		}
	}
	// The API socket exists before the TAP does: clients talk to it as
	// soon as they see the TAP.
	var api *slirpapi.Server
	if o.APISocket != "" {
		var err error
		if api, err = slirpapi.Bind(o.APISocket); err != nil {
			return err
		}
		defer api.Close()
	}
	d, err := daemon.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer d.Close()
	fmt.Fprintf(stdout, "tapstack slirp4netns: %s in the namespace of %s, MTU %d, network %s, gateway %s, DNS %s, namespace %s\n",
		o.TAP, o.Target, o.MTU, o.CIDR, plan.Stack[0].Addr(), joinPrefixes(plan.DNS), plan.NS[0].Addr())
	if api != nil {
		api.Serve(d.Relay(), plan.NS[0].Addr())
	}
	if o.ExitFD >= 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		if o.ExitFDClosed {
			cancel() // closed before it was watched: the end, once up
		} else {
			go watchExitFD(ctx, o.ExitFD, cancel)
		}
	}
	// Restricted once set up, before it says it is ready: from here on
	// the daemon only moves packets and sockets.
	if o.Sandbox {
		root, err := sandbox.PivotRoot("/etc", "/run")
		if err != nil {
			return fmt.Errorf("--enable-sandbox: %w", err)
		}
		rep, err := sandbox.Restrict("/etc", "/run")
		if err != nil {
			return fmt.Errorf("--enable-sandbox: %w", err)
		}
		for _, l := range append(root, rep...) {
			fmt.Fprintf(stdout, "sandbox: %s\n", l)
		}
	}
	if o.Seccomp {
		rep, err := sandbox.Seccomp()
		if err != nil {
			return fmt.Errorf("--enable-seccomp: %w", err)
		}
		for _, l := range rep {
			fmt.Fprintln(stdout, l)
		}
	}
	if o.ReadyFD >= 0 {
		f := os.NewFile(uintptr(o.ReadyFD), "ready-fd")
		if _, err := f.Write([]byte("1")); err != nil {
			f.Close()
			return fmt.Errorf("write to ready-fd %d: %w", o.ReadyFD, err)
		}
		f.Close()
	}
	return d.Wait(ctx)
}

// watchExitFD calls exited when the other end of fd is closed (hang-up,
// error, or no such descriptor), as slirp4netns's --exit-fd; data to
// read does not end it.
func watchExitFD(ctx context.Context, fd int, exited func()) {
	defer exited()
	fds := []unix.PollFd{{Fd: int32(fd)}} // POLLHUP, POLLERR and POLLNVAL are always reported
	for ctx.Err() == nil {
		n, err := unix.Poll(fds, 250)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			return
		}
		if n > 0 {
			// Readable but not closed: wait without spinning.
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// execSandboxed starts this slirp4netns again in the same process (exec
// keeps the PID its caller knows and the descriptors it passed), in a
// mount namespace of its own and, without root, as root of the target's
// user namespace, as slirp4netns's sandbox does: the pivot into a tmpfs
// root and the capability it keeps (CAP_NET_BIND_SERVICE) need both.
func execSandboxed(o *slirpcli.Options, args []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return errors.New("needs util-linux's unshare on PATH for a mount namespace of its own")
	}
	argv := append([]string{unshare, "--mount", "--propagation", "slave", "--", self, "slirp4netns"}, args...)
	if os.Geteuid() != 0 {
		userns := o.UsernsPath
		if userns == "" && o.NetnsType == "pid" {
			userns = "/proc/" + o.Target + "/ns/user"
		}
		if userns == "" {
			return errors.New("--netns-type=path without root needs --userns-path (the user namespace that owns the network namespace)")
		}
		nsenter, err := exec.LookPath("nsenter")
		if err != nil {
			return errors.New("without root, needs util-linux's nsenter on PATH to enter the target's user namespace")
		}
		argv = append([]string{nsenter, "--preserve-credentials", "--user=" + userns, "--"}, argv...)
	}
	return syscall.Exec(argv[0], argv, append(os.Environ(), sandbox.PrivateMountsEnv+"=1"))
}

// slirpTAPCmd is the hidden subcommand that opens the TAP inside the
// target's user and network namespaces, started there by nsenter, for a
// slirp4netns run without root.
const slirpTAPCmd = "__slirp-tap"

// nsenterArgs are nsenter's arguments to enter a target's network
// namespace and the user namespace that owns it: the namespaces of
// process pid (its user namespace unless usernsPath names one, and only
// if pidUser), or the namespace file netnsPath with usernsPath. ok is
// false when no user namespace is named. The credentials are kept: this
// user is root of the target's user namespace (rootless podman and
// rootlesskit map it to 0), so the opener keeps its capabilities there,
// and such namespaces often deny setgroups, which nsenter would
// otherwise call.
func nsenterArgs(pid int, netnsPath, usernsPath string, pidUser bool) (args []string, ok bool) {
	args = []string{"--preserve-credentials"}
	if pid != 0 {
		args = append(args, "--target", strconv.Itoa(pid), "--net")
	} else {
		args = append(args, "--net="+netnsPath)
	}
	switch {
	case usernsPath != "":
		return append(args, "--user="+usernsPath), true
	case pid != 0 && pidUser:
		return append(args, "--user"), true
	}
	return nil, false
}

// handOff opens cfg's TAP through the helper that nsArgs take into the
// target's namespaces (without root), configured there if configure, and
// returns its queues.
func handOff(cfg daemon.Config, configure bool, nsArgs []string, target string) ([]link.Device, error) {
	hc := handoff.Config{TAP: cfg.TAP, MTU: cfg.MTU, Offload: !cfg.NoOffload, Configure: configure,
		NSAddrs: cfg.Plan.NS, StackAddrs: cfg.Plan.Stack}
	if hc.MTU == 0 {
		hc.MTU = daemon.DefaultMTU
	}
	if cfg.MAC != nil {
		hc.MAC = cfg.MAC.String()
	}
	tap, err := openTAPInTarget(nsArgs, target, hc)
	if err != nil {
		return nil, err
	}
	return tap.Devices(), nil
}

// openTAPInTarget runs the helper in the target's namespaces and returns
// the TAP it hands back.
func openTAPInTarget(nsArgs []string, target string, cfg handoff.Config) (*link.TAP, error) {
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, errors.New("without root, needs util-linux's nsenter on PATH to enter the target's user namespace")
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(nsenter, append(nsArgs, self, slirpTAPCmd, cfg.Encode())...)
	cmd.Stderr = os.Stderr
	p, err := handoff.Start(cmd, cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot join the namespace of %s: %w", target, err)
	}
	p.Close()
	_ = cmd.Wait() // the helper exits once it handed the TAP over
	return p.TAP, nil
}

// runSlirpTAP is the helper: inside the target's namespaces it opens the
// TAP (configured with -c), hands it to the parent, and exits.
func runSlirpTAP(args []string) error {
	if len(args) != 1 {
		return errors.New("internal: bad opener arguments")
	}
	cfg, err := handoff.Decode(args[0])
	if err != nil {
		return err
	}
	tap, err := handoff.Open(cfg)
	if err != nil {
		return err
	}
	return tap.Close()
}
