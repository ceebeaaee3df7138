package tests

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack/nshost"
	"github.com/tapstack/tapstack/tests/nstest"
)

// dnsmasqHosts writes the test zone: name.test (both families), v4only.test,
// alias.test (a CNAME), many.test (40 addresses: too many for UDP) and
// files.test (the outer namespace of the relay tests).
func dnsmasqHosts(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	var hosts strings.Builder
	hosts.WriteString("10.0.2.50 name.test\nfd00::50 name.test\n10.0.2.51 v4only.test\n10.0.2.100 ns.test\n198.51.100.1 files.test\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&hosts, "10.0.3.%d many.test\n", i)
	}
	hf := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hf, []byte(hosts.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return hf
}

// runDNSMasq starts dnsmasq serving the test zone inside namespace ns on
// port 53 of every address there, until the test ends.
func runDNSMasq(t *testing.T, ns string) <-chan struct{} {
	t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		cienv.Skip(t, "dns: skipped: needs dnsmasq (apt-get install dnsmasq-base)")
	}
	hf := dnsmasqHosts(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, bin, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--addn-hosts="+hf, "--cname=alias.test,name.test", "--local=/test/",
		"--port=53", "--user=root", "--pid-file="+filepath.Join(filepath.Dir(hf), "pid"), "--log-facility=-")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("dnsmasq: %s", out.String())
		}
	})
	return done
}

// startDNSMasq runs dnsmasq in env's namespace and waits until it answers
// over the stack.
func startDNSMasq(t *testing.T, env *nstest.Env) {
	t.Helper()
	done := runDNSMasq(t, env.Netns)
	if err := sockets.SetResolver(env.Stack, sockets.ResolverConfig{Servers: []netip.AddrPort{netip.MustParseAddrPort("10.0.2.100:53")}, Timeout: 300 * time.Millisecond, Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := sockets.GetAddrInfo(env.Stack, "name.test", "80", sockets.AF_INET, sockets.SOCK_STREAM, 0, 0); err == nil {
			return
		}
		select {
		case <-done:
			t.Fatal("dnsmasq exited")
		default:
		}
		if i > 50 {
			t.Fatal("dnsmasq does not answer")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func hostsOf(ais []sockets.AddrInfo) []string {
	var out []string
	seen := map[string]bool{}
	for _, ai := range ais {
		if !seen[ai.Addr.Host] {
			seen[ai.Addr.Host] = true
			out = append(out, ai.Addr.Host)
		}
	}
	return out
}

func TestGetAddrInfoAgainstDNSMasq(t *testing.T) {
	env := nstest.New(t, nshost.Config{})
	startDNSMasq(t, env)
	st := env.Stack
	servers := []netip.AddrPort{netip.MustParseAddrPort("10.0.2.100:53")}
	sockets.SetResolver(st, sockets.ResolverConfig{Servers: servers, Timeout: time.Second, Attempts: 2})

	t.Run("both families", func(t *testing.T) {
		ais, err := sockets.GetAddrInfo(st, "name.test", 80, sockets.AF_UNSPEC, sockets.SOCK_STREAM, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(hostsOf(ais), " ")
		// The stack routes fd00::/64, so IPv6 comes first.
		if got != "fd00::50 10.0.2.50" || ais[0].Family != sockets.AF_INET6 || ais[0].Addr.Port != 80 || ais[0].Type != sockets.SOCK_STREAM || ais[0].Proto != sockets.IPPROTO_TCP {
			t.Fatalf("name.test = %+v", ais)
		}
	})
	t.Run("family filter", func(t *testing.T) {
		ais, err := sockets.GetAddrInfo(st, "name.test", "", sockets.AF_INET, 0, 0, 0)
		if err != nil || strings.Join(hostsOf(ais), " ") != "10.0.2.50" || len(ais) != 2 {
			t.Fatalf("AF_INET, any type: %+v %v", ais, err)
		}
		_, err = sockets.GetAddrInfo(st, "v4only.test", "", sockets.AF_INET6, 0, 0, 0)
		if !errors.Is(err, sockets.EAI_NONAME) && !errors.Is(err, sockets.EAI_ADDRFAMILY) {
			t.Fatalf("AF_INET6 for an IPv4-only name: %v", err)
		}
	})
	t.Run("cname", func(t *testing.T) {
		ais, err := sockets.GetAddrInfo(st, "alias.test", "http", sockets.AF_INET, sockets.SOCK_STREAM, 0, sockets.AI_CANONNAME)
		if err != nil {
			t.Fatal(err)
		}
		if ais[0].CanonName != "name.test" || ais[0].Addr.Host != "10.0.2.50" || ais[0].Addr.Port != 80 {
			t.Fatalf("alias.test = %+v", ais)
		}
	})
	t.Run("nxdomain", func(t *testing.T) {
		_, err := sockets.GetAddrInfo(st, "nope.test", "80", sockets.AF_UNSPEC, 0, 0, 0)
		var ge *sockets.GAIError
		if !errors.As(err, &ge) || ge.Code != sockets.EAI_NONAME || !strings.Contains(err.Error(), "EAI_NONAME") {
			t.Fatalf("nope.test: %v", err)
		}
	})
	t.Run("truncated reply falls back to TCP", func(t *testing.T) {
		ais, err := sockets.GetAddrInfo(st, "many.test", "53", sockets.AF_INET, sockets.SOCK_DGRAM, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(hostsOf(ais)); n != 40 {
			t.Fatalf("many.test: %d addresses, want 40", n)
		}
	})
	t.Run("silent server then the next one", func(t *testing.T) {
		black := netip.MustParseAddrPort("10.0.2.77:53") // nobody there
		sockets.SetResolver(st, sockets.ResolverConfig{Servers: []netip.AddrPort{black, servers[0]}, Timeout: 300 * time.Millisecond, Attempts: 1})
		start := time.Now()
		ais, err := sockets.GetAddrInfo(st, "name.test", "80", sockets.AF_INET, sockets.SOCK_STREAM, 0, 0)
		if err != nil || ais[0].Addr.Host != "10.0.2.50" {
			t.Fatalf("with a silent first server: %+v %v", ais, err)
		}
		if time.Since(start) < 300*time.Millisecond {
			t.Fatalf("answered in %v: the silent server was not tried first", time.Since(start))
		}
		sockets.SetResolver(st, sockets.ResolverConfig{Servers: []netip.AddrPort{black}, Timeout: 200 * time.Millisecond, Attempts: 1})
		_, err = sockets.GetAddrInfo(st, "name.test", "80", sockets.AF_INET, sockets.SOCK_STREAM, 0, 0)
		if !errors.Is(err, sockets.EAI_AGAIN) {
			t.Fatalf("only a silent server: %v, want EAI_AGAIN", err)
		}
	})
}

func TestNCResolvesNames(t *testing.T) {
	ns := ncNamespace(t)
	runDNSMasq(t, ns)
	wait := kernelPeer(t, ns, pyTCPServer, "4", "5556")
	out, errs, err := runNC(t, "by name", "--netns", ns, "--dns", "10.0.2.100", "-4", "ns.test", "5556")
	if err != nil || out != "got:by name" {
		t.Fatalf("nc ns.test: out %q err %v stderr %q", out, err, errs)
	}
	wait()
	_, errs, err = runNC(t, "", "--netns", ns, "--dns", "10.0.2.100", "nope.test", "5556")
	if err == nil || !strings.Contains(errs, "EAI_NONAME") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("nc nope.test: err %v, stderr %q; want one line with EAI_NONAME", err, errs)
	}
}
