package lab

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/link"
)

// UplinkOptions configures an uplink; the zero value is the default.
type UplinkOptions struct {
	// Impair is the impairment of the uplink's wire, seen from the node
	// as LinkOptions.Impair ("out:" what the node sends).
	Impair string
	// ResolvConf names the upstream resolvers of the uplink's DNS
	// forwarder: a file in resolv.conf's format, or that format's text
	// itself ("nameserver 192.0.2.53"); "" takes the host's
	// /etc/resolv.conf.
	ResolvConf string
	// HostLoopback maps the host's loopback as slirp4netns does: the
	// daemon's gateway address (10.0.2.2) reaches the host's 127.0.0.1.
	HostLoopback bool
	// Daemon holds further daemon settings; zero fields are defaults.
	// Its Netns, PID, NetnsPath and Devices are ignored.
	Daemon daemon.Config
}

// DefaultUplinkTAP is the name of an uplink's TAP inside its node, unless
// UplinkOptions.Daemon.TAP names another.
const DefaultUplinkTAP = "up0"

// Uplink is a node's NAT to the host through a tapstack daemon.
type Uplink struct {
	node    *Node
	d       *daemon.Daemon
	addrs   []netip.Prefix // the node's addresses on the TAP
	resolv  string         // the resolv.conf of the nodes behind it
	capPath string
	masq    bool
}

// AddUplink gives node a NAT to the host through a tapstack daemon running
// in this process (its relay and DNS forwarder). The node gets the
// daemon's default plan on a TAP (10.0.2.100/24 and fd00::100/64,
// gateways 10.0.2.2 and fd00::2, DNS 10.0.2.3 and fd00::3), default
// routes through the daemon, and a resolv.conf naming its DNS. The node
// forwards from then on, and masquerades (with nft) what other nodes send
// through it, since the daemon relays only its namespace's own addresses;
// every other node of the network gets a default route towards it and
// the same resolv.conf. A router with an uplink is thus the network's NAT
// gateway.
//
// The relay reaches whatever the host reaches: a test that must not
// touch the host's network runs in a namespace of its own (see
// nstest.Isolate).
func (n *Network) AddUplink(node *Node, opts UplinkOptions) (u *Uplink, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errClosed
	}
	if node == nil || node.net != n {
		return nil, fmt.Errorf("lab: uplink: the node is not of this network")
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("lab: uplink of %s: %w", node.name, err)
		}
	}()
	if node.kind == Switch {
		return nil, fmt.Errorf("a switch cannot have an uplink")
	}
	if node.uplink != nil {
		return nil, fmt.Errorf("it has one already")
	}
	cfg := opts.Daemon
	cfg.Netns = node.NetNS()
	cfg.PID, cfg.NetnsPath, cfg.Devices = 0, "", nil
	if cfg.TAP == "" {
		cfg.TAP = DefaultUplinkTAP
	}
	if opts.Impair != "" {
		spec, err := link.ParseImpairSpec(opts.Impair)
		if err != nil {
			return nil, err
		}
		cfg.Impair = fromA(spec)
	}
	if cfg.ImpairSeed == 0 {
		cfg.ImpairSeed = n.seed + 1000 + int64(len(n.uplinks))
	}
	if opts.HostLoopback {
		cfg.Relay.HostLoopback = true
	}
	if rc := opts.ResolvConf; rc != "" {
		if strings.Contains(rc, "\n") || strings.HasPrefix(strings.TrimSpace(rc), "nameserver") {
			f := filepath.Join(os.TempDir(), cfg.Netns+"-resolv.conf")
			if err := os.WriteFile(f, []byte(strings.TrimRight(rc, "\n")+"\n"), 0o644); err != nil {
				return nil, err
			}
			n.files = append(n.files, f)
			rc = f
		}
		cfg.Relay.ResolvConf = rc
	}
	if cfg.Control == "" {
		cfg.Control = filepath.Join(os.TempDir(), cfg.Netns+".sock")
	}
	if cfg.Log == nil && n.opts.Logf != nil {
		cfg.Log = slog.New(slog.NewTextHandler(logfWriter{n.opts.Logf}, nil))
	}
	capPath := ""
	if cfg.Pcap == "" && n.opts.CaptureDir != "" {
		cfg.Pcap = filepath.Join(n.opts.CaptureDir, n.name+"-up"+strconv.Itoa(len(n.uplinks)+1)+".pcap")
		capPath = cfg.Pcap
	}
	d, err := daemon.Start(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	u = &Uplink{node: node, d: d, capPath: capPath}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if err := node.setForwarding(); err != nil {
		return nil, err
	}
	dc := d.Config()
	u.addrs = dc.Plan.NS
	u.resolv = dc.Plan.ResolvConf()
	if err := masquerade(node, dc.TAP); err != nil {
		n.logf("uplink of %s: no masquerading, so only %s itself reaches the host: %v", node.name, node.name, err)
	} else {
		u.masq = true
	}
	node.uplink = u
	n.uplinks = append(n.uplinks, u)
	n.logf("uplink of %s: %s %v (seed %d)", node.name, dc.TAP, u.addrs, dc.ImpairSeed)
	if err := n.refreshLocked(); err != nil {
		return u, err
	}
	return u, nil
}

// masquerade makes node rewrite the source of what leaves through iface,
// IPv4 and IPv6, to its own address there.
func masquerade(node *Node, iface string) error {
	rules := fmt.Sprintf("table inet tapstack-lab {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\toifname %q masquerade\n\t}\n}\n", iface)
	cmd := exec.Command("ip", "netns", "exec", node.NetNS(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Uplink is the node's uplink, nil if it has none.
func (nd *Node) Uplink() *Uplink {
	nd.net.mu.Lock()
	defer nd.net.mu.Unlock()
	return nd.uplink
}

// Impair changes the impairment of the uplink's wire while it runs, in
// UplinkOptions.Impair's syntax ("" or "off" for none).
func (u *Uplink) Impair(spec string) error {
	sp, err := link.ParseImpairSpec(spec)
	if err != nil {
		return fmt.Errorf("lab: impair the uplink of %s: %w", u.node.name, err)
	}
	if err := u.d.Host().SetImpairment(fromA(sp)); err != nil {
		return fmt.Errorf("lab: impair the uplink of %s: %w", u.node.name, err)
	}
	return nil
}

// Daemon is the uplink's running daemon: its relay, host and counters.
func (u *Uplink) Daemon() *daemon.Daemon { return u.d }

// Node is the node the uplink belongs to.
func (u *Uplink) Node() *Node { return u.node }

// Addrs are the node's addresses on the uplink's TAP.
func (u *Uplink) Addrs() []netip.Prefix { return append([]netip.Prefix(nil), u.addrs...) }

// Masquerading says whether other nodes reach the host through the
// uplink (nft was there to masquerade their traffic).
func (u *Uplink) Masquerading() bool { return u.masq }

// CapturePath is the uplink's pcap file, "" when not capturing.
func (u *Uplink) CapturePath() string { return u.capPath }

// logfWriter passes a daemon's log lines to a Logf.
type logfWriter struct{ logf func(string, ...any) }

func (w logfWriter) Write(b []byte) (int, error) {
	w.logf("%s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
