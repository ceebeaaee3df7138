package relayed

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/internal/cienv"
	"github.com/tapstack/tapstack/tests/nstest"
)

// TestDHCPInEveryMode: the DHCP server answers in a namespace the daemon
// configured itself (as up and run do), not only behind slirp4netns
// without -c: busybox udhcpc gets the first lease, 10.0.2.15, from the
// gateway, with the plan's router and DNS.
func TestDHCPInEveryMode(t *testing.T) {
	if _, err := exec.LookPath("busybox"); err != nil {
		cienv.Skip(t, "needs busybox (udhcpc)")
	}
	env := nstest.NewRelayed(t, daemon.Config{})
	// The script prints what udhcpc was given and applies nothing.
	out := env.MustRun(20*time.Second, nil, "sh", "-c", `
s=$(mktemp); printf '#!/bin/sh\n[ "$1" = bound ] && echo "ip=$ip router=$router dns=$dns lease=$lease mtu=$mtu"\n' > $s; chmod +x $s
busybox udhcpc -q -f -n -i tap0 -s $s -t 5 -T 1 2>/dev/null; rm -f $s`)
	if want := "ip=10.0.2.15 router=10.0.2.2 dns=10.0.2.3 lease=86400 mtu=65520"; !strings.Contains(out, want) {
		t.Fatalf("udhcpc in a configured namespace: %q, want %q", out, want)
	}
}
