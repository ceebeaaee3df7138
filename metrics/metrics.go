// Package metrics exports a tapstack stack's counters to Prometheus: the
// NIC and protocol counters of stack.Stats, the socket table of package
// sockets, and the frame counters of the stack's links.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(metrics.New(st, ep))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack"
)

// Namespace prefixes every metric name.
const Namespace = "tapstack"

// Collector is a prometheus.Collector over one stack. It reads the
// counters when scraped and holds nothing else.
type Collector struct {
	st    *stack.Stack
	links []*link.Endpoint
}

// New returns a Collector over st and, if given, the links it runs on.
func New(st *stack.Stack, links ...*link.Endpoint) *Collector {
	return &Collector{st: st, links: links}
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
}

// nicCounter is one counter of stack.NICStats.
type nicCounter struct {
	d   *prometheus.Desc
	get func(stack.NICStats) uint64
}

var nicCounters = []nicCounter{
	{desc("nic_rx_packets_total", "Packets the NIC received.", "nic"), func(n stack.NICStats) uint64 { return n.RxPackets }},
	{desc("nic_rx_bytes_total", "Bytes the NIC received.", "nic"), func(n stack.NICStats) uint64 { return n.RxBytes }},
	{desc("nic_tx_packets_total", "Packets the NIC sent.", "nic"), func(n stack.NICStats) uint64 { return n.TxPackets }},
	{desc("nic_tx_bytes_total", "Bytes the NIC sent.", "nic"), func(n stack.NICStats) uint64 { return n.TxBytes }},
	{desc("nic_tx_dropped_no_buffer_total", "Packets dropped because the link's queue was full.", "nic"), func(n stack.NICStats) uint64 { return n.TxDroppedNoBuffer }},
	{desc("nic_rx_malformed_transport_total", "Packets whose transport header could not be parsed.", "nic"), func(n stack.NICStats) uint64 { return n.RxMalformedTransport }},
	{desc("nic_rx_while_disabled_total", "Packets that arrived while the NIC was down.", "nic"), func(n stack.NICStats) uint64 { return n.RxWhileDisabled }},
}

// protoCounter is one counter of stack.ProtocolStats.
type protoCounter struct {
	d   *prometheus.Desc
	get func(stack.ProtocolStats) uint64
}

var protoCounters = []protoCounter{
	{desc("dropped_packets_total", "Packets dropped anywhere in the stack."), func(p stack.ProtocolStats) uint64 { return p.DroppedPackets }},
	{desc("ip_packets_received_total", "IP packets received."), func(p stack.ProtocolStats) uint64 { return p.IPPacketsReceived }},
	{desc("ip_packets_sent_total", "IP packets sent."), func(p stack.ProtocolStats) uint64 { return p.IPPacketsSent }},
	{desc("ip_packets_delivered_total", "IP packets delivered to a transport protocol."), func(p stack.ProtocolStats) uint64 { return p.IPPacketsDelivered }},
	{desc("ip_malformed_received_total", "Malformed IP packets received."), func(p stack.ProtocolStats) uint64 { return p.IPMalformedReceived }},
	{desc("ip_invalid_destination_total", "IP packets received for an address not the stack's."), func(p stack.ProtocolStats) uint64 { return p.IPInvalidDestination }},
	{desc("tcp_active_opens_total", "TCP connections opened by the stack."), func(p stack.ProtocolStats) uint64 { return p.TCPActiveOpens }},
	{desc("tcp_passive_opens_total", "TCP connections accepted by the stack."), func(p stack.ProtocolStats) uint64 { return p.TCPPassiveOpens }},
	{desc("tcp_segments_received_total", "Valid TCP segments received."), func(p stack.ProtocolStats) uint64 { return p.TCPSegmentsReceived }},
	{desc("tcp_segments_sent_total", "TCP segments sent."), func(p stack.ProtocolStats) uint64 { return p.TCPSegmentsSent }},
	{desc("tcp_retransmits_total", "TCP segments retransmitted."), func(p stack.ProtocolStats) uint64 { return p.TCPRetransmits }},
	{desc("tcp_resets_sent_total", "TCP resets sent."), func(p stack.ProtocolStats) uint64 { return p.TCPResetsSent }},
	{desc("tcp_resets_received_total", "TCP resets received."), func(p stack.ProtocolStats) uint64 { return p.TCPResetsReceived }},
	{desc("tcp_failed_attempts_total", "TCP connection attempts that failed."), func(p stack.ProtocolStats) uint64 { return p.TCPFailedAttempts }},
	{desc("udp_packets_received_total", "UDP datagrams received."), func(p stack.ProtocolStats) uint64 { return p.UDPPacketsReceived }},
	{desc("udp_packets_sent_total", "UDP datagrams sent."), func(p stack.ProtocolStats) uint64 { return p.UDPPacketsSent }},
	{desc("udp_unknown_port_total", "UDP datagrams to a port nothing listens on."), func(p stack.ProtocolStats) uint64 { return p.UDPUnknownPort }},
	{desc("udp_receive_buffer_errors_total", "UDP datagrams dropped because a receive buffer was full."), func(p stack.ProtocolStats) uint64 { return p.UDPReceiveBufferErrors }},
	{desc("icmp4_echo_requests_received_total", "ICMPv4 echo requests received."), func(p stack.ProtocolStats) uint64 { return p.ICMPv4EchoRequestsReceived }},
	{desc("icmp6_echo_requests_received_total", "ICMPv6 echo requests received."), func(p stack.ProtocolStats) uint64 { return p.ICMPv6EchoRequestsReceived }},
}

var (
	tcpEstablished = desc("tcp_current_established", "TCP connections established now.")
	socketsInUse   = desc("sockets_in_use", "Slots of the socket table in use.")
	socketLimit    = desc("sockets_limit", "Capacity of the socket table.")
	linkFrames     = desc("link_frames_total", "Frames that crossed the link, by direction (in: from the wire).", "link", "direction")
	linkBytes      = desc("link_bytes_total", "Bytes of the frames that crossed the link, by direction.", "link", "direction")
	linkErrors     = desc("link_errors_total", "Frames the link failed to read or write, by direction.", "link", "direction")
	linkFiltered   = desc("link_rx_filtered_total", "Frames the link's filter dropped (spoofed sources).", "link")
	linkDropped    = desc("link_rx_dropped_total", "Frames read before the stack was attached.", "link")
	linkDiverted   = desc("link_rx_diverted_total", "Frames the relay's flow engine took before the stack.", "link")
)

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, n := range nicCounters {
		ch <- n.d
	}
	for _, p := range protoCounters {
		ch <- p.d
	}
	for _, d := range []*prometheus.Desc{tcpEstablished, socketsInUse, socketLimit, linkFrames, linkBytes, linkErrors, linkFiltered, linkDropped, linkDiverted} {
		ch <- d
	}
}

// Collect reads the counters.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.st.Stats()
	for _, nic := range st.NICs {
		for _, n := range nicCounters {
			ch <- prometheus.MustNewConstMetric(n.d, prometheus.CounterValue, float64(n.get(nic)), nic.Name)
		}
	}
	for _, p := range protoCounters {
		ch <- prometheus.MustNewConstMetric(p.d, prometheus.CounterValue, float64(p.get(st.Protocols)))
	}
	ch <- prometheus.MustNewConstMetric(tcpEstablished, prometheus.GaugeValue, float64(st.Protocols.TCPCurrentEstablished))
	tab := sockets.Table(c.st)
	ch <- prometheus.MustNewConstMetric(socketsInUse, prometheus.GaugeValue, float64(tab.InUse))
	ch <- prometheus.MustNewConstMetric(socketLimit, prometheus.GaugeValue, float64(tab.Limit))
	for i, l := range c.links {
		name := linkName(i)
		ls := l.Stats()
		ch <- prometheus.MustNewConstMetric(linkFrames, prometheus.CounterValue, float64(ls.RxFrames), name, "in")
		ch <- prometheus.MustNewConstMetric(linkFrames, prometheus.CounterValue, float64(ls.TxFrames), name, "out")
		ch <- prometheus.MustNewConstMetric(linkBytes, prometheus.CounterValue, float64(ls.RxBytes), name, "in")
		ch <- prometheus.MustNewConstMetric(linkBytes, prometheus.CounterValue, float64(ls.TxBytes), name, "out")
		ch <- prometheus.MustNewConstMetric(linkErrors, prometheus.CounterValue, float64(ls.RxErrors), name, "in")
		ch <- prometheus.MustNewConstMetric(linkErrors, prometheus.CounterValue, float64(ls.TxErrors), name, "out")
		ch <- prometheus.MustNewConstMetric(linkFiltered, prometheus.CounterValue, float64(ls.RxFiltered), name)
		ch <- prometheus.MustNewConstMetric(linkDropped, prometheus.CounterValue, float64(ls.RxDropped), name)
		ch <- prometheus.MustNewConstMetric(linkDiverted, prometheus.CounterValue, float64(ls.RxDiverted), name)
	}
}

// linkName labels the i-th link given to New.
func linkName(i int) string { return "link" + strconv.Itoa(i) }
