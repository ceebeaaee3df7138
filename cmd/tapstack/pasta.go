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
	"strings"
	"syscall"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/internal/pastacli"
)

// pastaDaemonEnv marks the daemon a backgrounding pasta started; its
// value is the descriptor on which it says it is ready (or why not).
const pastaDaemonEnv = "TAPSTACK_PASTA_READY_FD"

// runPasta is `tapstack pasta`, and tapstack invoked as pasta: pasta's
// command line on a tapstack host. Unless -f, it returns (exit 0) once
// the namespace is configured and reachable, leaving the daemon in the
// background, its PID in --pid FILE, as pasta does.
func runPasta(argv0 string, args []string, stdout, stderr io.Writer) int {
	o, err := pastacli.Parse(args)
	switch {
	case errors.Is(err, pastacli.ErrHelp):
		fmt.Fprint(stdout, pastacli.Usage)
		return 0
	case errors.Is(err, pastacli.ErrVersion):
		fmt.Fprintf(stdout, "pasta %s\ntapstack %s\n", pastacli.Version, version)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		return 1
	}
	readyFD, _ := strconv.Atoi(os.Getenv(pastaDaemonEnv))
	if !o.Foreground && readyFD == 0 {
		return pastaBackground(argv0, o, args, stderr)
	}
	ready := func(err error) {
		if o.Foreground && err == nil && o.PIDFile != "" {
			err = os.WriteFile(o.PIDFile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644)
		}
		if readyFD == 0 {
			return
		}
		f := os.NewFile(uintptr(readyFD), "ready")
		msg := "ok\n"
		if err != nil {
			msg = err.Error() + "\n"
		}
		f.WriteString(msg)
		f.Close()
	}
	if err := servePasta(o, ready, stderr); err != nil {
		ready(err)
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		return 1
	}
	return 0
}

// pastaBackground starts this pasta again as the daemon, in a session of
// its own with its standard streams on /dev/null (callers such as
// rootlesskit wait for the output to end), and waits until it says it is
// ready; then it writes the daemon's PID to --pid and exits 0.
func pastaBackground(argv0 string, o *pastacli.Options, args []string, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		return 1
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		return 1
	}
	cmd := exec.Command(self, append([]string{"pasta"}, args...)...)
	cmd.Env = append(os.Environ(), pastaDaemonEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if o.LogFile != "" {
		f, err := os.OpenFile(o.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintf(stderr, "%s: log file: %v\n", argv0, err)
			return 1
		}
		defer f.Close()
		cmd.Stderr = f
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", argv0, err)
		return 1
	}
	w.Close()
	msg, _ := io.ReadAll(r)
	r.Close()
	if string(msg) != "ok\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		why := strings.TrimSpace(string(msg))
		if why == "" {
			why = "the daemon ended before it was ready"
		}
		fmt.Fprintf(stderr, "%s: %s\n", argv0, why)
		return 1
	}
	if o.PIDFile != "" {
		if err := os.WriteFile(o.PIDFile, []byte(fmt.Sprintf("%d\n", cmd.Process.Pid)), 0o644); err != nil {
			fmt.Fprintf(stderr, "%s: PID file open: %v\n", argv0, err)
			return 1
		}
	}
	_ = cmd.Process.Release()
	return 0
}

// servePasta runs the daemon for o until its namespace goes away or a
// signal comes; ready is told once it serves (or why it cannot).
func servePasta(o *pastacli.Options, ready func(error), stderr io.Writer) error {
	level := "warn"
	if o.Debug {
		level = "debug"
	}
	log, _ := daemon.NewLogger(stderr, "text", level, false)
	cfg, err := o.DaemonConfig(log, os.Geteuid() == 0)
	if err != nil {
		return err
	}
	setProcs(0)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Geteuid() != 0 {
		// Without root the helper opens the TAP in the target's user and
		// network namespaces and hands it over.
		args, ok := nsenterArgs(o.PID, o.NetnsPath, o.UsernsPath, !o.NetnsOnly)
		if !ok {
			return errors.New("without root, needs the user namespace that owns the network namespace (--userns, or a PID)")
		}
		target := o.NetnsPath
		if o.PID != 0 {
			target = strconv.Itoa(o.PID)
		}
		if cfg.Devices, err = handOff(cfg, o.ConfigNet, args, target); err != nil {
			return err
		}
	}
	d, err := daemon.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer d.Close()
	ready(nil)
	select {
	case <-ctx.Done():
		d.Drain()
	case <-d.Done():
		// The namespace went away: pasta's normal end.
	}
	return nil
}
