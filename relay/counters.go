package relay

import (
	"runtime"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapstack/tapstack/sockets"
)

// Stats are the gateway's counters.
type Stats struct {
	TCPRelayed, UDPRelayed, PingsRelayed uint64 // flows relayed
	ActiveFlows                          int64
	Refused                              uint64 // by policy
	DialFailures                         uint64 // host dials that failed
	DroppedBusy                          uint64 // flows dropped at a limit
	DNSQueries                           uint64
	Forwarded                            uint64 // port-forward connections and flows
	UDPErrors                            uint64 // host UDP errors passed on as ICMP
	PendingDials                         int    // host dials in progress
	DialsEvicted                         uint64 // dials dropped to give their slot to a less busy address
	DNSDropped                           uint64 // DNS queries dropped at MaxDNSQueries
	PingsDropped                         uint64 // pings dropped at MaxPings
	SYNsDropped                          uint64 // SYNs dropped at the forwarder's in-flight limit
	TableFull                            uint64 // flows refused because the socket table was full
}

// Stats returns a snapshot of the counters.
func (g *Gateway) Stats() Stats {
	pending, evicted := g.dials.stats()
	var synDrops uint64
	if g.fwdStats != nil {
		synDrops = g.fwdStats().Dropped
	}
	return Stats{
		PendingDials: pending, DialsEvicted: evicted,
		DNSDropped: g.stats.dnsDropped.Load(), PingsDropped: g.stats.pingsDropped.Load(), SYNsDropped: synDrops,
		TableFull:  g.stats.tableFull.Load(),
		TCPRelayed: g.stats.tcp.Load(), UDPRelayed: g.stats.udp.Load(), PingsRelayed: g.stats.ping.Load(),
		ActiveFlows: g.stats.active.Load(), Refused: g.stats.refused.Load(), DialFailures: g.stats.dialFail.Load(),
		DroppedBusy: g.stats.busy.Load(), DNSQueries: g.stats.dns.Load(), Forwarded: g.stats.forwarded.Load(),
		UDPErrors: g.stats.udpErrors.Load(),
	}
}

// Counter is one number of a running relay, or of a part a daemon runs
// beside it (its link, the process). A table of them is the one source
// of both the control socket's "stats" map (Name → value) and the
// Prometheus metrics (Metric, with Label): the same number has the same
// name in both. docs/observability.md lists the table.
type Counter struct {
	// Name is the counter's key in the control socket's "stats" map.
	Name string
	// Metric is its Prometheus name under the "tapstack_" prefix; several
	// counters share a metric with different Label values. Empty: the
	// number is exported by another collector (package metrics, Go's).
	Metric string
	// Label is the metric's label name and this counter's value of it;
	// zero for a metric without labels.
	Label [2]string
	// Help describes the metric (the first row of a metric gives it).
	Help string
	// Gauge marks a number that goes down as well as up.
	Gauge bool
	// Value reads the number.
	Value func() uint64
}

// Help texts of the metrics the relay's counters share.
const (
	helpFlowsTotal = "Flows relayed from the namespace so far, by protocol."
	helpBytes      = "Bytes relayed and forwarded, by direction (up: namespace to host)."
	helpDNS        = "DNS queries to the stack's resolver, by result (answered, failed: no upstream answered, dropped: at the in-flight limit)."
	helpRefusals   = "Flows and packets refused or dropped, by cause."
)

// Refusal makes the counter of a cause of refusals: it is Name in the
// control socket's map and relay_refusals_total{cause=Name} in
// Prometheus.
func Refusal(name string, value func() uint64) Counter {
	return Counter{Name: name, Metric: "relay_refusals_total", Label: [2]string{"cause", name}, Help: helpRefusals, Value: value}
}

// Counters returns the relay's counter table.
func (g *Gateway) Counters() []Counter {
	stat := func(f func(Stats) uint64) func() uint64 { return func() uint64 { return f(g.Stats()) } }
	load := func(f func() uint64) func() uint64 { return f }
	up := func() uint64 { u, _ := g.Bytes(); return u }
	down := func() uint64 { _, d := g.Bytes(); return d }
	return []Counter{
		{Name: "tcp_relayed", Metric: "relay_flows_total", Label: [2]string{"proto", "tcp"}, Help: helpFlowsTotal, Value: load(g.stats.tcp.Load)},
		{Name: "udp_relayed", Metric: "relay_flows_total", Label: [2]string{"proto", "udp"}, Help: helpFlowsTotal, Value: load(g.stats.udp.Load)},
		{Name: "pings_relayed", Metric: "relay_flows_total", Label: [2]string{"proto", "icmp"}, Help: helpFlowsTotal, Value: load(g.stats.ping.Load)},
		{Name: "active_flows", Gauge: true, Value: func() uint64 { return uint64(max(g.stats.active.Load(), 0)) }},
		{Name: "forwarded", Metric: "relay_forwarded_total", Help: "Connections and UDP flows that came in through port forwards.", Value: load(g.stats.forwarded.Load)},
		{Name: "bytes_up", Metric: "relay_bytes_total", Label: [2]string{"direction", "up"}, Help: helpBytes, Value: up},
		{Name: "bytes_down", Metric: "relay_bytes_total", Label: [2]string{"direction", "down"}, Help: helpBytes, Value: down},
		{Name: "dials_started", Metric: "relay_dials_started_total", Help: "Host TCP dials started.", Value: func() uint64 { return g.DialStats().Started }},
		{Name: "pending_dials", Metric: "relay_pending_dials", Gauge: true, Help: "Host TCP dials in progress.", Value: stat(func(s Stats) uint64 { return uint64(s.PendingDials) })},
		{Name: "dns_queries", Value: load(g.stats.dns.Load)},
		{Name: "dns_answered", Metric: "relay_dns_queries_total", Label: [2]string{"result", "answered"}, Help: helpDNS, Value: load(g.stats.dnsAnswered.Load)},
		{Name: "dns_failed", Metric: "relay_dns_queries_total", Label: [2]string{"result", "failed"}, Help: helpDNS, Value: load(g.stats.dnsFailed.Load)},
		{Name: "dns_dropped", Metric: "relay_dns_queries_total", Label: [2]string{"result", "dropped"}, Help: helpDNS, Value: load(g.stats.dnsDropped.Load)},
		Refusal("refused", load(g.stats.refused.Load)),
		Refusal("dial_failures", load(g.stats.dialFail.Load)),
		Refusal("dropped_busy", load(g.stats.busy.Load)),
		Refusal("dials_evicted", stat(func(s Stats) uint64 { return s.DialsEvicted })),
		Refusal("dns_dropped", load(g.stats.dnsDropped.Load)),
		Refusal("pings_dropped", load(g.stats.pingsDropped.Load)),
		Refusal("syns_dropped", stat(func(s Stats) uint64 { return s.SYNsDropped })),
		Refusal("socket_table_full", load(g.stats.tableFull.Load)),
		Refusal("udp_errors", load(g.stats.udpErrors.Load)),
		{Name: "engine_wakeups", Metric: "relay_engine_wakeups_total", Help: "Times the flow engine's loop woke (0 on the stack engine).", Value: g.engineWakeups},
		{Name: "engine_engaged", Metric: "relay_engine_engaged", Gauge: true, Help: "1 while the flow engine's loop has a processor of its own and reads the TAP: while relayed flows live, and for 2 s after the last (0 on the stack engine).", Value: g.engineEngaged},
		{Name: "dhcp_leases", Metric: "relay_dhcp_leases", Gauge: true, Help: "Addresses the DHCP server has leased to the namespace.", Value: func() uint64 {
			if g.dhcp == nil {
				return 0
			}
			return uint64(g.dhcp.Leases())
		}},
		{Name: "router_advertisements", Metric: "relay_router_advertisements_total", Help: "IPv6 router advertisements sent to the namespace.", Value: func() uint64 {
			if g.ra == nil {
				return 0
			}
			return g.ra.sent.Load()
		}},
		{Name: "sockets_in_use", Gauge: true, Value: func() uint64 {
			if g.st == nil {
				return 0
			}
			return uint64(sockets.Table(g.st).InUse)
		}},
	}
}

// ProcessCounters are the counters of the process a relay runs in.
func ProcessCounters() []Counter {
	return []Counter{{Name: "goroutines", Gauge: true, Value: func() uint64 { return uint64(runtime.NumGoroutine()) }}}
}

// CounterMap reads a counter table into the control socket's map.
func CounterMap(cs []Counter) map[string]uint64 {
	m := make(map[string]uint64, len(cs))
	for _, c := range cs {
		m[c.Name] = c.Value()
	}
	return m
}

// CounterNames lists a table's names, sorted, once each.
func CounterNames(cs []Counter) []string {
	seen := map[string]bool{}
	var names []string
	for _, c := range cs {
		if !seen[c.Name] {
			seen[c.Name] = true
			names = append(names, c.Name)
		}
	}
	sort.Strings(names)
	return names
}

// counterDescs makes one Desc per metric of a table.
func counterDescs(cs []Counter) map[string]*prometheus.Desc {
	descs := map[string]*prometheus.Desc{}
	for _, c := range cs {
		if c.Metric == "" || descs[c.Metric] != nil {
			continue
		}
		var labels []string
		if c.Label[0] != "" {
			labels = []string{c.Label[0]}
		}
		descs[c.Metric] = prometheus.NewDesc("tapstack_"+c.Metric, c.Help, labels, nil)
	}
	return descs
}
