package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/tapstack/tapstack/stack/nshost"
)

// exitError carries a command's exit status out of run.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func runRun(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", "-- CMD [ARGS...]", stderr)
	var hf hostFlags
	var rf relayFlags
	hf.register(fs, "")
	rf.register(fs)
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
	if *userns || os.Geteuid() != 0 {
		if hf.netns != "" {
			return errors.New("--netns does not go with a user namespace run (the namespace has no name)")
		}
		hf.userns = nshost.UniqueName("run-")
		maxSocketsFor(&hf, &rf)
		return runUserns(&hf, &rf, cmdArgs, stdout, stderr)
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		return errors.New("needs iproute2's ip on PATH to enter the namespace")
	}
	if hf.netns == "" {
		hf.netns = nshost.UniqueName("tapstack-run-")
	}
	maxSocketsFor(&hf, &rf)

	// Signals go to the command; the command's end ends the run.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	s, err := startSession(ctx, &hf, &rf, nil, stderr)
	if err != nil {
		return err
	}
	defer s.Close()

	cmd := exec.Command(ipPath, append([]string{"netns", "exec", hf.netns}, cmdArgs...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmdArgs[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return waitCommand(s, &rf, sigs, cmd.Process, done, stderr)
}

// waitCommand passes signals to the command until it exits, then drains
// the relay (what the command sent is still in the namespace's kernel
// and in the stack) for at most --drain-timeout, and returns the
// command's status. A link that fails (the TAP deleted) ends the run
// with an error.
func waitCommand(s *session, rf *relayFlags, sigs <-chan os.Signal, p *os.Process, done <-chan error, stderr io.Writer) error {
	for {
		select {
		case sig := <-sigs:
			_ = p.Signal(sig)
		case <-s.host.Link.Failed():
			_ = p.Kill()
			<-done
			return fmt.Errorf("the namespace's TAP is gone: %w", s.host.Link.Err())
		case err := <-done:
			s.drain(rf.drainTimeout)
			return childExit(err)
		}
	}
}
