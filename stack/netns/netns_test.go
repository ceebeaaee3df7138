package netns_test

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tapstack/tapstack/stack/netns"

	"github.com/tapstack/tapstack/internal/cienv"
)

func TestCreateMoveConfigureDelete(t *testing.T) {
	if os.Geteuid() != 0 {
		cienv.Skip(t, "netns: skipped: needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
	}
	id := strconv.Itoa(os.Getpid())
	name := "tsnt-" + id
	ns, err := netns.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if _, err := netns.Create(name); err == nil {
		t.Fatal("creating an existing namespace succeeded")
	}
	// One end of a veth pair stands in for the TAP.
	va, vb := "tsva"+id, "tsvb"+id
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: va}, PeerName: vb}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	defer netlink.LinkDel(veth)
	if err := ns.MoveLink(vb, "eth7"); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(vb); err == nil {
		t.Fatal("the link is still in this namespace")
	}
	if err := ns.Configure(netns.LinkConfig{Name: "eth7", Addrs: []netip.Prefix{netip.MustParsePrefix("10.77.0.1/24")}, Gateway4: netip.MustParseAddr("10.77.0.2")}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", name, "ip", "-4", "addr", "show", "eth7").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "10.77.0.1/24") {
		t.Fatalf("address not configured: %v %s", err, out)
	}
	var ifaces []net.Interface
	if err := ns.Do(func() error {
		var err error
		ifaces, err = net.Interfaces()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	names := ""
	for _, i := range ifaces {
		names += i.Name + " "
	}
	if !strings.Contains(names, "eth7") || !strings.Contains(names, "lo") {
		t.Fatalf("Do did not run inside the namespace: interfaces %s", names)
	}
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if netns.Exists(name) {
		t.Fatal("Close did not delete the namespace it created")
	}
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBadNames(t *testing.T) {
	for _, n := range []string{"", "a/b", "..", "."} {
		if _, err := netns.Create(n); err == nil {
			t.Errorf("Create(%q) accepted", n)
		}
	}
}
