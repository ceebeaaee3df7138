package handoff

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/stack/nshost"
)

// childEnv makes the test binary the helper: it opens the TAP its one
// argument describes, hands it over, waits for Go and exits 0 (3 if
// something failed, having said what on stderr).
const childEnv = "HANDOFF_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		cfg, err := Decode(os.Args[len(os.Args)-1])
		if err == nil {
			var tap interface{ Close() error }
			if tap, err = Open(cfg); err == nil {
				err = WaitGo()
				tap.Close()
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helper starts the test binary as the helper in namespace ns.
func helper(t *testing.T, ns string, cfg Config) *exec.Cmd {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, self, "-test.run=^$", cfg.Encode())
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	return cmd
}

// TestHandOverATAP: a helper in another namespace opens and configures
// a TAP and hands it over; the parent gets a working queue of that
// device, the kernel side has the addresses asked for, and the helper
// goes on only after Go. A helper that fails says why through its exit.
func TestHandOverATAP(t *testing.T) {
	if os.Geteuid() != 0 {
		cienv.Skip(t, "handoff: skipped: needs root to create a namespace and a TAP")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		cienv.Skip(t, "handoff: skipped: needs /dev/net/tun")
	}
	ns := nshost.UniqueName("tsho-")
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })

	cfg := Config{TAP: "tsho0", MTU: 1500, Configure: true, MAC: "02:00:00:00:00:99",
		NSAddrs:    []netip.Prefix{netip.MustParsePrefix("10.0.9.100/24")},
		StackAddrs: []netip.Prefix{netip.MustParsePrefix("10.0.9.2/24")}}
	cmd := helper(t, ns, cfg)
	p, err := Start(cmd, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer p.TAP.Close()
	out, _ := exec.Command("ip", "-n", ns, "-br", "addr", "show", "dev", "tsho0").CombinedOutput()
	if !strings.Contains(string(out), "10.0.9.100/24") {
		t.Fatalf("the kernel side: %q, want 10.0.9.100/24", out)
	}
	out, _ = exec.Command("ip", "-n", ns, "-br", "link", "show", "dev", "tsho0").CombinedOutput()
	if !strings.Contains(string(out), "02:00:00:00:00:99") {
		t.Fatalf("the kernel side's MAC: %q", out)
	}
	if len(p.TAP.Devices()) != 1 {
		t.Fatalf("the TAP handed over has %d queues, want 1", len(p.TAP.Devices()))
	}
	if err := p.Go(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the helper after Go: %v", err)
	}
	p.Close()

	// A helper that cannot open its TAP (a name too long for Linux).
	bad := Config{TAP: "a-name-longer-than-15", MTU: 1500}
	_, err = Start(helper(t, ns, bad), bad)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Start with a bad TAP name: %v, want the helper's exit status 3", err)
	}
}
