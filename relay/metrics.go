package relay

import (
	"github.com/prometheus/client_golang/prometheus"
)

func relayDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName("tapstack", "relay", name), help, labels, nil)
}

// The metrics whose labels are not known in advance; the others come
// from the counter table (Counters).
var (
	mFlows       = relayDesc("flows", "Flows in progress, by protocol, kind (relay: from the namespace; forward: a port forward) and state.", "proto", "kind", "state")
	mDialsFailed = relayDesc("dials_failed_total", "Host TCP dials that failed, by errno.", "errno")
	mDialTime    = relayDesc("dial_duration_seconds", "How long successful host TCP dials took.")
	mFwdConns    = relayDesc("forward_connections_total", "Connections (TCP) or flows (UDP) through each port forward.", "forward")
	mFwdBytes    = relayDesc("forward_bytes_total", "Bytes through each port forward, by direction (up: namespace to host).", "forward", "direction")
)

// Collector returns a prometheus.Collector over the gateway's counter
// table (Counters) and more, the counters of the parts beside it (a
// daemon's link): flows by protocol and state, bytes each way, dials
// (started, failed by errno, latency), DNS queries, every refusal and
// limit counter, and the port forwards.
func (g *Gateway) Collector(more ...Counter) prometheus.Collector {
	table := append(g.Counters(), more...)
	return gatewayCollector{g: g, table: table, descs: counterDescs(table)}
}

type gatewayCollector struct {
	g     *Gateway
	table []Counter
	descs map[string]*prometheus.Desc
}

func (c gatewayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mFlows, mDialsFailed, mDialTime, mFwdConns, mFwdBytes} {
		ch <- d
	}
	for _, d := range c.descs {
		ch <- d
	}
}

func (c gatewayCollector) Collect(ch chan<- prometheus.Metric) {
	g := c.g
	for _, row := range c.table {
		d := c.descs[row.Metric]
		if d == nil {
			continue
		}
		kind := prometheus.CounterValue
		if row.Gauge {
			kind = prometheus.GaugeValue
		}
		var labels []string
		if row.Label[0] != "" {
			labels = []string{row.Label[1]}
		}
		ch <- prometheus.MustNewConstMetric(d, kind, float64(row.Value()), labels...)
	}
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
	ds := g.DialStats()
	for errno, n := range ds.Failed {
		counter(mDialsFailed, n, errno)
	}
	buckets := make(map[float64]uint64, len(ds.Bounds))
	for i, b := range ds.Bounds {
		buckets[b] = ds.Buckets[i]
	}
	ch <- prometheus.MustNewConstHistogram(mDialTime, ds.Succeeded, ds.Sum, buckets)
	for _, f := range g.ForwardList() {
		counter(mFwdConns, f.Conns, f.Spec)
		counter(mFwdBytes, f.Up, f.Spec, "up")
		counter(mFwdBytes, f.Down, f.Spec, "down")
	}
}
