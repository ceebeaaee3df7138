// Package nstest is a harness for integration tests that run real kernel
// tools against a tapstack host: it makes a uniquely named network
// namespace with a TAP and a stack in it (stack 10.0.2.2 / fd00::2,
// namespace 10.0.2.100 / fd00::100 by default), runs commands inside the
// namespace, and removes everything when the test ends, pass or fail.
//
// It needs CAP_NET_ADMIN, CAP_SYS_ADMIN, /dev/net/tun and iproute2's ip;
// without them New skips the test with one line. Other projects can import
// it: T is satisfied by *testing.T and *testing.B.
package nstest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack/nshost"
)

// T is the part of testing.TB the harness uses.
type T interface {
	Helper()
	Skip(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
}

// Env is a tapstack host in a namespace of the test's own.
type Env struct {
	*nshost.Host
	// Netns is the namespace's name.
	Netns string
	t     T
}

// Missing says why namespace tests cannot run here, or "" if they can.
func Missing() string {
	if os.Geteuid() != 0 {
		return "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create a TAP and a network namespace"
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "needs /dev/net/tun"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "needs iproute2's ip on PATH"
	}
	return ""
}

// Require skips the test with one line when namespace tests cannot run
// (and fails it on CI, where CI=true: see package cienv).
func Require(t T) {
	t.Helper()
	if why := Missing(); why != "" {
		cienv.Skip(t, "nstest: skipped: "+why)
	}
}

// New builds a host in a fresh, uniquely named namespace. Zero fields of
// cfg take nshost's defaults; cfg.Netns is ignored. The wire can always be
// impaired (Env.Impair); cfg.Impair impairs it from the start, and a zero
// cfg.ImpairSeed is replaced by a random seed, logged so that a failing
// run can be replayed. Everything is removed in t.Cleanup.
func New(t T, cfg nshost.Config) *Env {
	t.Helper()
	Require(t)
	cfg.Netns = nshost.UniqueName("tstest-")
	cfg.Impairable = true
	if cfg.ImpairSeed == 0 {
		cfg.ImpairSeed = time.Now().UnixNano()
	}
	if !cfg.Impair.IsZero() {
		t.Logf("nstest: impairing the wire: %v (seed %d)", cfg.Impair, cfg.ImpairSeed)
	}
	h, err := nshost.New(cfg)
	if err != nil {
		t.Fatalf("nstest: %v", err)
	}
	e := &Env{Host: h, Netns: cfg.Netns, t: t}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Logf("nstest: cleanup: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.WaitReady(ctx); err != nil {
		t.Fatalf("nstest: %v", err)
	}
	return e
}

// Impair changes how the wire between the namespace and the stack
// misbehaves, while the test runs: a spec of link.ParseImpairSpec, such
// as "loss=5%,delay=20ms,reorder=1%", or "off". A bad spec fails the
// test.
func (e *Env) Impair(spec string) {
	e.t.Helper()
	sp, err := link.ParseImpairSpec(spec)
	if err != nil {
		e.t.Fatalf("nstest: %v", err)
	}
	if err := e.SetImpairment(sp); err != nil {
		e.t.Fatalf("nstest: %v", err)
	}
	_, seed, _, _, _ := e.Impairment()
	e.t.Logf("nstest: impairing the wire: %v (seed %d)", sp, seed)
}

// Command returns a command that runs inside the namespace. The caller
// starts and waits for it; ctx kills it.
func (e *Env) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", e.Netns, name}, args...)...)
}

// Result is what a command printed and how it ended.
type Result struct {
	Stdout, Stderr string
	Err            error
}

// Run runs a command inside the namespace with stdin as its input and a
// timeout, and returns its output.
func (e *Env) Run(timeout time.Duration, stdin []byte, name string, args ...string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := e.Command(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %v: %w", name, timeout, err)
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Err: err}
}

// MustRun is Run that fails the test on a non-zero exit and returns stdout.
func (e *Env) MustRun(timeout time.Duration, stdin []byte, name string, args ...string) string {
	e.t.Helper()
	r := e.Run(timeout, stdin, name, args...)
	if r.Err != nil {
		e.t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), r.Err, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// Python runs a python3 script inside the namespace with args and returns
// its stdout; a non-zero exit fails the test.
func (e *Env) Python(timeout time.Duration, script string, args ...string) string {
	e.t.Helper()
	return e.MustRun(timeout, nil, "python3", append([]string{"-c", script}, args...)...)
}
