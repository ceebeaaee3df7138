package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"github.com/tapstack/tapstack/internal/bench"
	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack"
)

func runBench(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", "", stderr)
	quick := fs.Bool("quick", false, "fewer and shorter cases (under a minute)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	peers := fs.Bool("peers", true, "measure slirp4netns and pasta too when installed")
	dur := fs.Duration("time", 0, "length of each throughput case (default 5s, 2s with --quick)")
	mtu := fs.Int("mtu", link.MaxMTU, "MTU of every path")
	offload := fs.Bool("offload", true, "run tapstack's TAPs with virtio_net_hdr offloads (as run and up do)")
	txQueues := fs.Int("tx-queues", 1, "transmit queues of tapstack's TAPs (as run and up take)")
	against := fs.String("against", "", "another tapstack `binary` to measure in the same run (paths \"baseline sockets\" and \"baseline relay\")")
	cases := fs.String("cases", "", "run only the cases whose name matches this `regexp`")
	pathsRe := fs.String("paths", "", "measure only the paths whose name matches this `regexp` (kernel veth, tapstack sockets, tapstack relay, tapstack flow relay, baseline sockets, baseline relay, slirp4netns, pasta)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := preflight(); err != nil {
		return err
	}
	if *txQueues < 0 || *txQueues > stack.MaxTxQueues {
		return fmt.Errorf("--tx-queues %d: must be 0..%d", *txQueues, stack.MaxTxQueues)
	}
	if *dur != 0 && *dur < time.Second {
		return fmt.Errorf("--time %v: at least 1s", *dur)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	opts := bench.Options{Binary: self, Duration: *dur, Quick: *quick, Peers: *peers, MTU: *mtu, Offload: *offload, TxQueues: *txQueues, Progress: stderr}
	if *against != "" {
		st, err := os.Stat(*against)
		if err != nil {
			return fmt.Errorf("--against: %w", err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("--against %s: not an executable file", *against)
		}
		if opts.Against, err = filepath.Abs(*against); err != nil {
			return fmt.Errorf("--against: %w", err)
		}
	}
	for _, f := range []struct {
		flag, val string
		dst       **regexp.Regexp
	}{{"--cases", *cases, &opts.Cases}, {"--paths", *pathsRe, &opts.Paths}} {
		if f.val == "" {
			continue
		}
		re, err := regexp.Compile(f.val)
		if err != nil {
			return fmt.Errorf("%s %q: %w", f.flag, f.val, err)
		}
		*f.dst = re
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.WriteTable(stdout)
	return nil
}
