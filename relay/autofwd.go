package relay

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// autoFwd is the state of the forwards that follow the namespace's
// listening ports (pasta's -t auto, -u auto).
type autoFwd struct {
	active map[string]Forward // by spec; protected by Gateway.mu
	failed map[string]bool    // specs that could not be bound; tried again once gone
}

// SyncAutoForwards makes the automatic forwards of proto ("tcp" or
// "udp") those of the ports the namespace listens on now, as pasta's
// -t auto and -u auto do: for each port in v4 (or in v6: an IPv6
// listener on :: takes IPv4 too) the host's 0.0.0.0:PORT forwards to the
// namespace's IPv4 address, and for each port in v6 the host's
// [::]:PORT (IPv6 only) to its IPv6 address; forwards of ports no longer
// listened on end. A port the host cannot bind (in use) is reported once
// and tried again after it was gone. Forwards given otherwise are not
// touched, nor are their ports taken again.
func (g *Gateway) SyncAutoForwards(proto string, v4, v6 map[uint16]bool) error {
	want := map[string]Forward{}
	has4, has6 := false, false
	for _, a := range g.cfg.NSAddrs {
		has4 = has4 || a.Is4()
		has6 = has6 || a.Is6()
	}
	add := func(host netip.Addr, port uint16, v6only bool) {
		f := Forward{Proto: proto, Host: netip.AddrPortFrom(host, port), NSPort: port, V6Only: v6only}
		want[f.String()] = f
	}
	for p := range v4 {
		if has4 {
			add(netip.IPv4Unspecified(), p, false)
		}
	}
	for p := range v6 {
		if has4 {
			add(netip.IPv4Unspecified(), p, false)
		}
		if has6 {
			add(netip.IPv6Unspecified(), p, true)
		}
	}
	g.mu.Lock()
	if g.auto.active == nil {
		g.auto.active, g.auto.failed = map[string]Forward{}, map[string]bool{}
	}
	var gone []string
	for spec, f := range g.auto.active {
		if _, ok := want[spec]; !ok && f.Proto == proto {
			gone = append(gone, spec)
		}
	}
	for spec := range g.auto.failed {
		if _, ok := want[spec]; !ok && strings.HasSuffix(spec, "/"+proto) {
			delete(g.auto.failed, spec)
		}
	}
	var add2 []Forward
	for spec, f := range want {
		if _, ok := g.auto.active[spec]; ok || g.auto.failed[spec] {
			continue
		}
		if _, taken := g.fwds[spec]; taken {
			continue // a forward given otherwise
		}
		add2 = append(add2, f)
	}
	g.mu.Unlock()
	sort.Strings(gone)
	for _, spec := range gone {
		_ = g.RemoveForward(spec)
		g.mu.Lock()
		delete(g.auto.active, spec)
		g.mu.Unlock()
	}
	var errs []error
	for _, f := range add2 {
		err := g.AddForward(f)
		g.mu.Lock()
		if err != nil {
			g.auto.failed[f.String()] = true
			errs = append(errs, fmt.Errorf("automatic forward: %w", err))
		} else {
			g.auto.active[f.String()] = f
		}
		g.mu.Unlock()
	}
	return errors.Join(errs...)
}
