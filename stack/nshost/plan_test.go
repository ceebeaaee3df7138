package nshost

import (
	"net/netip"
	"testing"
)

// TestPlanIsSlirp4netns: the default plan and one on another network put
// the stack at .2 (::2), DNS at .3 (::3) and the namespace at .100
// (::100), and bad networks are refused with a reason.
func TestPlanIsSlirp4netns(t *testing.T) {
	p := DefaultPlan()
	want := Plan{
		Stack: []netip.Prefix{netip.MustParsePrefix("10.0.2.2/24"), netip.MustParsePrefix("fd00::2/64")},
		DNS:   []netip.Prefix{netip.MustParsePrefix("10.0.2.3/24"), netip.MustParsePrefix("fd00::3/64")},
		NS:    []netip.Prefix{netip.MustParsePrefix("10.0.2.100/24"), netip.MustParsePrefix("fd00::100/64")},
	}
	if fmtPlan(p) != fmtPlan(want) {
		t.Fatalf("default plan %v, want %v", fmtPlan(p), fmtPlan(want))
	}
	if got := p.ResolvConf(); got != "nameserver 10.0.2.3\nnameserver fd00::3\n" {
		t.Fatalf("resolv.conf %q", got)
	}
	p, err := PlanFor(netip.MustParsePrefix("192.168.64.0/25"), netip.Prefix{})
	if err != nil || p.NS[0].String() != "192.168.64.100/25" || len(p.Stack) != 1 {
		t.Fatalf("plan on 192.168.64.0/25: %v, %v", fmtPlan(p), err)
	}
	for _, bad := range []string{"10.0.2.100/24", "10.0.2.0/26"} {
		if _, err := PlanFor(netip.MustParsePrefix(bad), netip.Prefix{}); err == nil {
			t.Errorf("PlanFor(%s) accepted", bad)
		}
	}
}

func fmtPlan(p Plan) string {
	return joinAll(p.Stack) + " | " + joinAll(p.DNS) + " | " + joinAll(p.NS)
}

func joinAll(ps []netip.Prefix) string {
	s := ""
	for _, p := range ps {
		s += p.String() + " "
	}
	return s
}
