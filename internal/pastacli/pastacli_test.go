package pastacli

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// TestCallersArgv: the argument lists rootlesskit 2.3.6 and podman 5
// build parse into what they mean.
func TestCallersArgv(t *testing.T) {
	rk, err := Parse(strings.Fields("--stderr --ns-ifname=tap0 --mtu=65520 --config-net --address=10.0.2.100 --netmask=24 --gateway=10.0.2.2 --dns-forward=10.0.2.3 --no-map-gw --ipv4-only --tcp-ports=auto --udp-ports=auto 12345"))
	if err != nil {
		t.Fatal(err)
	}
	if rk.PID != 12345 || rk.Ifname != "tap0" || rk.MTU != 65520 || !rk.ConfigNet || rk.Addr4 != netip.MustParseAddr("10.0.2.100") ||
		rk.Prefix4 != 24 || rk.Gateway4 != netip.MustParseAddr("10.0.2.2") || !reflect.DeepEqual(rk.DNSForward, []netip.Addr{netip.MustParseAddr("10.0.2.3")}) ||
		!rk.NoMapGW || !rk.IPv4Only || rk.TCP.Mode != "auto" || rk.UDP.Mode != "auto" || rk.TCPNS.Set {
		t.Fatalf("rootlesskit's argv: %+v", rk)
	}
	pm, err := Parse(strings.Fields("--config-net -t 80-80:8080-8080 -t 127.0.0.1/9000-9001:9000-9001 --dns-forward 169.254.1.1 -u none -T none -U none --no-map-gw --quiet --netns /run/user/1000/netns/netns-x --map-guest-addr 169.254.1.2"))
	if err != nil {
		t.Fatal(err)
	}
	want := []PortSpec{{First: 80, Last: 80, Target: 8080}, {Addr: netip.MustParseAddr("127.0.0.1"), First: 9000, Last: 9001, Target: 9000}}
	if pm.NetnsPath != "/run/user/1000/netns/netns-x" || !pm.Quiet || !reflect.DeepEqual(pm.TCP.Specs, want) || pm.UDP.Mode != "none" ||
		pm.TCPNS.Mode != "none" || !reflect.DeepEqual(pm.MapGuestAddr, []netip.Addr{netip.MustParseAddr("169.254.1.2")}) {
		t.Fatalf("podman's argv: %+v", pm)
	}
	// Options after the PID, grouped short ones, --netns NAME.
	o, err := Parse([]string{"-fq", "42", "-m", "1500"})
	if err != nil || o.PID != 42 || !o.Foreground || !o.Quiet || o.MTU != 1500 {
		t.Fatalf("-fq 42 -m 1500: %+v %v", o, err)
	}
	if o, err := Parse([]string{"--netns", "ctr"}); err != nil || o.NetnsPath != "/run/netns/ctr" {
		t.Fatalf("--netns ctr: %+v %v", o, err)
	}
}

// TestRefusals: what is not pasta's or not supported is an error that
// names it; --help and --version end parsing.
func TestRefusals(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--map-gw-typo", "1"}, "unrecognized option '--map-gw-typo'"},
		{[]string{"--runas", "0", "1"}, "not supported by tapstack"},
		{[]string{"-x", "1"}, "invalid option -- 'x'"},
		{[]string{"-t"}, "option requires an argument -- 't'"},
		{[]string{"-t", "0", "1"}, "invalid port specifier 0"},
		{[]string{"-t", "1-3:5-6", "1"}, "invalid port specifier"},
		{[]string{"-t", "all", "1"}, "only allowed for passt"},
		{[]string{"-a", "127.0.0.1", "1"}, "invalid address"},
		{[]string{"-n", "255.0.255.0", "-a", "10.0.0.1", "1"}, "invalid netmask"},
		{[]string{"1", "2"}, "tapstack run runs a command"},
		{[]string{"--netns", "x", "1"}, "both --netns and PID"},
	} {
		if _, err := Parse(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
	if _, err := Parse([]string{"--host-lo-to-ns-lo", "--version"}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("rootlesskit's probe --host-lo-to-ns-lo --version: %v, want unsupported (so rootlesskit does not pass it)", err)
	}
	if _, err := Parse([]string{"--version"}); !errors.Is(err, ErrVersion) {
		t.Errorf("--version: %v", err)
	}
	if _, err := Parse([]string{"-h"}); !errors.Is(err, ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

// TestExclusionsAndInterfaces: ~PORT leaves ports out of a range, or
// alone means every other port the namespace listens on; %IF binds the
// host's listener to an interface.
func TestExclusionsAndInterfaces(t *testing.T) {
	o, err := Parse(strings.Fields("--config-net -a 10.0.2.100 -g 10.0.2.2 -4 -t %lo/8000-8003,~8001 -u ~53,~5353 -T 9000-9001,~9000 -U none --netns /x"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := o.DaemonConfig(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	var fwds []string
	for _, f := range cfg.Relay.Forwards {
		fwds = append(fwds, f.String())
	}
	if want := []string{"0.0.0.0%lo:8000:8000/tcp", "0.0.0.0%lo:8002:8002/tcp", "0.0.0.0%lo:8003:8003/tcp"}; !reflect.DeepEqual(fwds, want) {
		t.Errorf("-t %%lo/8000-8003,~8001: %v, want %v", fwds, want)
	}
	if !cfg.AutoForwardUDP || !reflect.DeepEqual(cfg.AutoForwardSkipUDP, []uint16{53, 5353}) || cfg.AutoForwardTCP {
		t.Errorf("-u ~53,~5353: auto %v skip %v", cfg.AutoForwardUDP, cfg.AutoForwardSkipUDP)
	}
	if len(cfg.NSForwards) != 1 || cfg.NSForwards[0].NSPort != 9001 || cfg.AutoNSForwardUDP {
		t.Errorf("-T 9000-9001,~9000 -U none: %v, auto UDP %v", cfg.NSForwards, cfg.AutoNSForwardUDP)
	}
}
