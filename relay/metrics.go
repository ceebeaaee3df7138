package relay

import (
	"github.com/prometheus/client_golang/prometheus"
)

func relayDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName("tapstack", "relay", name), help, labels, nil)
}

var (
	mFlows       = relayDesc("flows", "Flows in progress, by protocol, kind (relay: from the namespace; forward: a port forward) and state.", "proto", "kind", "state")
	mFlowsTotal  = relayDesc("flows_total", "Flows relayed from the namespace so far, by protocol.", "proto")
	mForwarded   = relayDesc("forwarded_total", "Connections and UDP flows that came in through port forwards.")
	mBytes       = relayDesc("bytes_total", "Bytes relayed and forwarded, by direction (up: namespace to host).", "direction")
	mDialsStart  = relayDesc("dials_started_total", "Host TCP dials started.")
	mDialsFailed = relayDesc("dials_failed_total", "Host TCP dials that failed, by errno.", "errno")
	mDialTime    = relayDesc("dial_duration_seconds", "How long successful host TCP dials took.")
	mPending     = relayDesc("pending_dials", "Host TCP dials in progress.")
	mDNS         = relayDesc("dns_queries_total", "DNS queries to the stack's resolver, by result (answered, failed: no upstream answered, dropped: at the in-flight limit).", "result")
	mRefusals    = relayDesc("refusals_total", "Flows and packets refused or dropped, by cause.", "cause")
	mFwdConns    = relayDesc("forward_connections_total", "Connections (TCP) or flows (UDP) through each port forward.", "forward")
	mFwdBytes    = relayDesc("forward_bytes_total", "Bytes through each port forward, by direction (up: namespace to host).", "forward", "direction")
)

// Collector returns a prometheus.Collector over the gateway's counters:
// flows by protocol and state, bytes each way, dials (started, failed by
// errno, latency), DNS queries, every refusal and limit counter, and the
// port forwards.
func (g *Gateway) Collector() prometheus.Collector { return gatewayCollector{g} }

type gatewayCollector struct{ g *Gateway }

func (c gatewayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mFlows, mFlowsTotal, mForwarded, mBytes, mDialsStart, mDialsFailed, mDialTime, mPending, mDNS, mRefusals, mFwdConns, mFwdBytes} {
		ch <- d
	}
}

func (c gatewayCollector) Collect(ch chan<- prometheus.Metric) {
	g := c.g
	st := g.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	type key struct{ proto, kind, state string }
	flows := map[key]int{}
	for _, p := range []string{"tcp", "udp"} {
		for _, k := range []string{"relay", "forward"} {
			for _, s := range []string{"established", "closing"} {
				flows[key{p, k, s}] = 0
			}
		}
	}
	for _, f := range g.FlowList() {
		flows[key{f.Proto, f.Kind, f.State}]++
	}
	for k, n := range flows {
		ch <- prometheus.MustNewConstMetric(mFlows, prometheus.GaugeValue, float64(n), k.proto, k.kind, k.state)
	}
	counter(mFlowsTotal, st.TCPRelayed, "tcp")
	counter(mFlowsTotal, st.UDPRelayed, "udp")
	counter(mFlowsTotal, st.PingsRelayed, "icmp")
	counter(mForwarded, st.Forwarded)
	up, down := g.Bytes()
	counter(mBytes, up, "up")
	counter(mBytes, down, "down")
	ds := g.DialStats()
	counter(mDialsStart, ds.Started)
	for errno, n := range ds.Failed {
		counter(mDialsFailed, n, errno)
	}
	buckets := make(map[float64]uint64, len(ds.Bounds))
	for i, b := range ds.Bounds {
		buckets[b] = ds.Buckets[i]
	}
	ch <- prometheus.MustNewConstHistogram(mDialTime, ds.Succeeded, ds.Sum, buckets)
	ch <- prometheus.MustNewConstMetric(mPending, prometheus.GaugeValue, float64(st.PendingDials))
	answered, failed := g.stats.dnsAnswered.Load(), g.stats.dnsFailed.Load()
	counter(mDNS, answered, "answered")
	counter(mDNS, failed, "failed")
	counter(mDNS, st.DNSDropped, "dropped")
	for cause, v := range map[string]uint64{
		"policy": st.Refused, "busy": st.DroppedBusy, "dial_evicted": st.DialsEvicted, "dns_dropped": st.DNSDropped,
		"pings_dropped": st.PingsDropped, "syns_dropped": st.SYNsDropped, "socket_table_full": st.TableFull,
		"udp_errors": st.UDPErrors, "dial_failed": st.DialFailures,
	} {
		counter(mRefusals, v, cause)
	}
	for _, f := range g.ForwardList() {
		counter(mFwdConns, f.Conns, f.Spec)
		counter(mFwdBytes, f.Up, f.Spec, "up")
		counter(mFwdBytes, f.Down, f.Spec, "down")
	}
}
