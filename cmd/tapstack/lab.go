package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/tapstack/tapstack/lab"
)

const labUsage = `Usage: tapstack lab up FILE     build the network FILE describes (.yaml, .yml or .toml),
                               print how to enter each node, remove it on SIGINT/SIGTERM
       tapstack lab down NAME  remove lab NAME: stop its process, delete what a killed one left

The file's keys: docs/lab.md; an example: docs/lab-example.yaml.
`

// runLab is `tapstack lab up FILE` and `tapstack lab down NAME`; the lab
// package does the work.
func runLab(args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprint(stdout, labUsage)
		return flag.ErrHelp
	}
	if len(args) != 2 || args[0] != "up" && args[0] != "down" {
		fmt.Fprint(stderr, labUsage)
		return errUsage
	}
	if args[0] == "down" {
		return lab.Down(args[1])
	}
	spec, err := lab.ReadSpec(args[1])
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return lab.Up(ctx, spec, stdout)
}
