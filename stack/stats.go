package stack

import "gvisor.dev/gvisor/pkg/tcpip"

// NICStats are the packet counters of one NIC, as gVisor counts them at the
// network layer boundary.
type NICStats struct {
	ID                   tcpip.NICID
	Name                 string
	RxPackets, RxBytes   uint64
	TxPackets, TxBytes   uint64
	TxDroppedNoBuffer    uint64 // dropped because the link's queue was full
	RxMalformedTransport uint64 // transport header could not be parsed
	RxWhileDisabled      uint64 // arrived while the NIC was down
}

// ProtocolStats are stack-wide counters per protocol.
type ProtocolStats struct {
	// DroppedPackets counts packets dropped anywhere in the stack.
	DroppedPackets uint64

	IPPacketsReceived, IPPacketsSent, IPPacketsDelivered uint64
	IPMalformedReceived, IPInvalidDestination            uint64

	TCPActiveOpens, TCPPassiveOpens, TCPCurrentEstablished uint64
	TCPSegmentsReceived, TCPSegmentsSent, TCPRetransmits   uint64
	TCPResetsSent, TCPResetsReceived, TCPFailedAttempts    uint64

	UDPPacketsReceived, UDPPacketsSent, UDPUnknownPort uint64
	UDPReceiveBufferErrors                             uint64

	ICMPv4EchoRequestsReceived, ICMPv4EchoRepliesSent uint64
	ICMPv6EchoRequestsReceived, ICMPv6EchoRepliesSent uint64
}

// Stats are a snapshot of a stack's counters.
type Stats struct {
	NICs      []NICStats
	Protocols ProtocolStats
}

// Stats returns a snapshot of the counters.
func (s *Stack) Stats() Stats {
	var out Stats
	info := s.gv.NICInfo()
	for _, n := range s.nics {
		i, ok := info[n.ID]
		if !ok {
			continue
		}
		st := i.Stats
		out.NICs = append(out.NICs, NICStats{
			ID:                   n.ID,
			Name:                 n.Name,
			RxPackets:            st.Rx.Packets.Value(),
			RxBytes:              st.Rx.Bytes.Value(),
			TxPackets:            st.Tx.Packets.Value(),
			TxBytes:              st.Tx.Bytes.Value(),
			TxDroppedNoBuffer:    st.TxPacketsDroppedNoBufferSpace.Value(),
			RxMalformedTransport: st.MalformedL4RcvdPackets.Value(),
			RxWhileDisabled:      st.DisabledRx.Packets.Value(),
		})
	}
	g := s.gv.Stats()
	out.Protocols = ProtocolStats{
		DroppedPackets:             g.DroppedPackets.Value(),
		IPPacketsReceived:          g.IP.PacketsReceived.Value(),
		IPPacketsSent:              g.IP.PacketsSent.Value(),
		IPPacketsDelivered:         g.IP.PacketsDelivered.Value(),
		IPMalformedReceived:        g.IP.MalformedPacketsReceived.Value(),
		IPInvalidDestination:       g.IP.InvalidDestinationAddressesReceived.Value(),
		TCPActiveOpens:             g.TCP.ActiveConnectionOpenings.Value(),
		TCPPassiveOpens:            g.TCP.PassiveConnectionOpenings.Value(),
		TCPCurrentEstablished:      g.TCP.CurrentEstablished.Value(),
		TCPSegmentsReceived:        g.TCP.ValidSegmentsReceived.Value(),
		TCPSegmentsSent:            g.TCP.SegmentsSent.Value(),
		TCPRetransmits:             g.TCP.Retransmits.Value(),
		TCPResetsSent:              g.TCP.ResetsSent.Value(),
		TCPResetsReceived:          g.TCP.ResetsReceived.Value(),
		TCPFailedAttempts:          g.TCP.FailedConnectionAttempts.Value(),
		UDPPacketsReceived:         g.UDP.PacketsReceived.Value(),
		UDPPacketsSent:             g.UDP.PacketsSent.Value(),
		UDPUnknownPort:             g.UDP.UnknownPortErrors.Value(),
		UDPReceiveBufferErrors:     g.UDP.ReceiveBufferErrors.Value(),
		ICMPv4EchoRequestsReceived: g.ICMP.V4.PacketsReceived.EchoRequest.Value(),
		ICMPv4EchoRepliesSent:      g.ICMP.V4.PacketsSent.EchoReply.Value(),
		ICMPv6EchoRequestsReceived: g.ICMP.V6.PacketsReceived.EchoRequest.Value(),
		ICMPv6EchoRepliesSent:      g.ICMP.V6.PacketsSent.EchoReply.Value(),
	}
	return out
}
