// Package link owns the wire of a tapstack host: the frames between a
// device and gVisor.
//
// A Device moves whole Ethernet frames: a TAP queue (OpenTAP) or one end of
// an in-memory cable (Pipe). An Endpoint drives a gVisor stack.LinkEndpoint
// from one or more Devices, one reader goroutine per device, and adds
// Ethernet framing so that ARP and NDP work.
//
// Which TAP path is used when: water opens a plain TAP (TAPConfig.Offload
// false), the portable way. With TAPConfig.Offload the queues are opened
// here with IFF_VNET_HDR and TUNSETOFFLOAD (water cannot set them): every
// frame then carries a virtio_net_hdr, the kernel hands over and accepts
// 64 KiB TCP segments with partial checksums, and the Endpoint (with
// Options.VnetHdr) offers gVisor host GSO (vnet.go).
//
// Start reading at Endpoint (endpoint.go); devices are in tap.go and pipe.go.
// This package knows nothing of IP addresses, sockets or namespaces.
package link
