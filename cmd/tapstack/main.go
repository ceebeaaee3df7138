// Command tapstack runs a userspace TCP/IP stack (gVisor's netstack) on a
// TAP device and gives a Linux network namespace its network through it.
//
//	tapstack up [flags]       give a namespace a tapstack host (daemon)
//	tapstack run [flags] -- CMD  run CMD in a namespace networked through tapstack
//	tapstack nc [flags] [HOST] PORT  netcat through a tapstack host
//	tapstack forward|capture|impair|ss|status [flags]  act on or look into a running daemon
//	tapstack bench [flags]    measure tapstack against the kernel and its peers
//	tapstack lab up FILE | down NAME  a network of namespaces from a YAML or TOML file
//	tapstack slirp4netns [OPTION]... PID|PATH [TAPNAME]  slirp4netns's command line
//	tapstack pasta [OPTION]... PID|--netns PATH  pasta's command line
//	tapstack version          print the version
//	tapstack help [command]   show help
//
// Every subcommand takes -h.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"up", "give a network namespace a tapstack host until SIGINT/SIGTERM", runUp},
		{"run", "run a command in a new namespace whose network goes through a tapstack host", runRun},
		{"forward", "add, remove or list port forwards of a running daemon", runForward},
		{"capture", "capture a running daemon's frames to a pcap file or stream (- for stdout)", runCapture},
		{"impair", "show or change how a running daemon impairs its wire (loss, delay, reorder, rate)", runImpair},
		{"ss", "list a running daemon's flows, port forwards, pending dials and sockets", runSS},
		{"status", "one screen about a running daemon: addresses, MTU, flows, drops, memory", runStatus},
		{"nc", "netcat on a fresh tapstack host in a namespace: connect or listen, TCP or UDP", runNC},
		{"slirp4netns", "slirp4netns's command line and API on a tapstack host (also as a symlink named slirp4netns)", frontEnd("slirp4netns", runSlirp)},
		{"pasta", "pasta's command line on a tapstack host, as podman and rootlesskit start it (also as a symlink named pasta)", frontEnd("pasta", runPasta)},
		{"bench", "measure tapstack against the kernel, slirp4netns and pasta in one run", runBench},
		{"lab", "build a network of namespaces from a YAML or TOML file (lab up FILE), remove one (lab down NAME)", runLab},
		{"version", "print the version", runVersion},
		{"help", "show help for tapstack or a command", runHelp},
	}
}

// frontEnd makes a command of a front end that speaks another program's
// command line (it takes its own name, and returns an exit status).
func frontEnd(name string, run func(argv0 string, args []string, stdout, stderr io.Writer) int) func([]string, io.Writer, io.Writer) error {
	return func(args []string, stdout, stderr io.Writer) error {
		if code := run("tapstack "+name, args, stdout, stderr); code != 0 {
			return exitError{code}
		}
		return nil
	}
}

// errUsage marks a usage error already reported by the flag package.
var errUsage = errors.New("usage")

func main() {
	// Invoked as slirp4netns (a symlink), it is slirp4netns.
	switch filepath.Base(os.Args[0]) {
	case "slirp4netns":
		os.Exit(runSlirp("slirp4netns", os.Args[1:], os.Stdout, os.Stderr))
	case "pasta", "pasta.avx2":
		os.Exit(runPasta("pasta", os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name := args[0]
	if name == slirpTAPCmd {
		if err := runSlirpTAP(args[1:]); err != nil {
			fmt.Fprintf(stderr, "slirp4netns: %v\n", err)
			return 1
		}
		return 0
	}
	if name == usernsChildCmd {
		if err := runUsernsChild(args[1:]); err != nil {
			fmt.Fprintf(stderr, "tapstack run: %v\n", err)
			return 1
		}
		return 0
	}
	switch name {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "-v", "-version", "--version":
		name = "version"
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		case errors.As(err, new(exitError)):
			var ee exitError
			errors.As(err, &ee)
			return ee.code
		default:
			fmt.Fprintf(stderr, "tapstack %s: %v\n", name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "tapstack: unknown command %q (run 'tapstack help')\n", name)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, "tapstack: a userspace TCP/IP stack on a TAP device\n\nUsage: tapstack COMMAND [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nRun 'tapstack COMMAND -h' for a command's flags.\n")
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "tapstack %s\n", version)
	return nil
}

func runHelp(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] && c.name != "help" {
			return c.run([]string{"-h"}, stdout, stdout)
		}
	}
	if args[0] == "help" {
		usage(stdout)
		return nil
	}
	fmt.Fprintf(stderr, "tapstack help: unknown command %q\n", args[0])
	return errUsage
}

// newFlagSet makes a flag set that reports errors on one line.
func newFlagSet(name, synopsis string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tapstack "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: tapstack %s [flags] %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args; -h prints usage and returns flag.ErrHelp, a bad flag
// prints one line and returns errUsage.
func parse(fs *flag.FlagSet, args []string) error {
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
		return flag.ErrHelp
	}
	if err != nil {
		fmt.Fprintf(out, "%s: %v (see -h)\n", fs.Name(), err)
		return errUsage
	}
	return nil
}
