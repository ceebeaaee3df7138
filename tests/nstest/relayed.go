package nstest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/stack/nshost"
)

// The addresses of an isolated test process's own namespace (Isolate),
// on its loopback: the servers a relayed test starts listen there, and
// they are the only peers its relay can reach.
const (
	OuterV4 = "198.51.100.1"
	OuterV6 = "2001:db8::1"
)

// isolatedEnv names the namespace a test binary was isolated in.
const isolatedEnv = "NSTEST_ISOLATED"

// madeEnv names the file where an isolated test process lists the
// namespaces it makes (noteMade), for Isolate to remove what is left.
const madeEnv = "NSTEST_MADE"

// noteMade records a namespace made by an isolated test process.
func noteMade(ns string) {
	path := os.Getenv(madeEnv)
	if path == "" {
		return
	}
	if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0); err == nil {
		fmt.Fprintln(f, ns)
		f.Close()
	}
}

// removeMade deletes the namespaces listed in path that still exist.
func removeMade(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	for _, ns := range strings.Fields(string(b)) {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	}
}

// Isolate runs a package's tests in a network namespace of their own,
// with only a loopback holding OuterV4 and OuterV6, so that a relay in
// the test process (NewRelayed) can reach nothing but the servers the
// tests start there. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(nstest.Isolate(m)) }
//
// It re-executes the test binary in the namespace with `ip netns exec`
// and removes the namespace afterwards. Where namespace tests cannot run
// (Missing), it runs m as it is, and NewRelayed skips.
func Isolate(m interface{ Run() int }) int {
	if os.Getenv(isolatedEnv) != "" || Missing() != "" {
		return m.Run()
	}
	name := nshost.UniqueName("tsiso-")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "nstest: ip netns add %s: %v %s\n", name, err, out)
		return 1
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", OuterV4 + "/32", "dev", "lo"},
		{"-6", "addr", "add", OuterV6 + "/128", "dev", "lo", "nodad"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "nstest: ip %v: %v %s\n", args, err, out)
			return 1
		}
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nstest:", err)
		return 1
	}
	// The child names each namespace it makes in a file, so that what
	// a killed child leaves is removed here; a signal to this process
	// ends the child and cleans up rather than leaving both behind.
	made, err := os.CreateTemp("", name+"-made-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "nstest:", err)
		return 1
	}
	made.Close()
	defer os.Remove(made.Name())
	defer removeMade(made.Name())
	cmd := exec.Command("ip", append([]string{"netns", "exec", name, self}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), isolatedEnv+"="+name, madeEnv+"="+made.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "nstest:", err)
		return 1
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-waited:
	case s := <-sig:
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-waited
		fmt.Fprintf(os.Stderr, "nstest: %v: the tests were stopped; their namespaces are removed\n", s)
		return 1
	}
	if err := werr; err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "nstest:", err)
		return 1
	}
	return 0
}

// Relayed is a namespace whose network goes through a tapstack daemon
// (package daemon) running in the test process: its relay, DNS
// forwarder and port forwards, driven as a library.
type Relayed struct {
	*Env
	// Daemon is the running daemon: its Relay, its Host, its counters.
	Daemon *daemon.Daemon
}

// NewRelayed starts a daemon for a fresh, uniquely named namespace with
// cfg (zero fields: the daemon's defaults; cfg.Netns is ignored) and
// removes everything in t.Cleanup. The test process must be isolated
// (Isolate): otherwise it skips, since its relay would reach the host's
// network. The daemon's log goes to t.Logf.
func NewRelayed(t T, cfg daemon.Config) *Relayed {
	t.Helper()
	Require(t)
	if os.Getenv(isolatedEnv) == "" {
		cienv.Skip(t, "nstest: skipped: a relayed environment needs nstest.Isolate in TestMain (its relay must not reach the host's network)")
	}
	cfg.Netns = nshost.UniqueName("tsrel-")
	noteMade(cfg.Netns)
	cfg.PID, cfg.NetnsPath, cfg.Devices = 0, "", nil
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.Control == "" {
		cfg.Control = fmt.Sprintf("%s/%s.sock", os.TempDir(), cfg.Netns)
	}
	d, err := daemon.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("nstest: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Logf("nstest: cleanup: %v", err)
		}
	})
	return &Relayed{Env: &Env{Host: d.Host(), Netns: cfg.Netns, t: t}, Daemon: d}
}

// logWriter passes a daemon's log lines to the test's log.
type logWriter struct{ t T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

var _ io.Writer = logWriter{}
