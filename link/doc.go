// Package link owns the wire of a tapstack host: the frames between a
// device and gVisor.
//
// A Device moves whole Ethernet frames: a TAP queue opened with water
// (OpenTAP) or one end of an in-memory cable (Pipe). An Endpoint drives a
// gVisor stack.LinkEndpoint from one or more Devices, one reader goroutine per
// device, and adds Ethernet framing so that ARP and NDP work.
//
// Start reading at Endpoint (endpoint.go); devices are in tap.go and pipe.go.
// This package knows nothing of IP addresses, sockets or namespaces.
package link
