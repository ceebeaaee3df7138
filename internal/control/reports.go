package control

import (
	"time"

	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/sockets"
)

// SSReport is the "ss" report: tapstack ss's document.
type SSReport struct {
	Flows        []relay.FlowInfo    `json:"flows"`
	Forwards     []relay.ForwardInfo `json:"forwards"`
	PendingDials []relay.DialInfo    `json:"pending_dials"`
	SocketsInUse int                 `json:"sockets_in_use"`
	SocketLimit  int                 `json:"socket_limit"`
	// Sockets are the stack's sockets when asked for (tapstack ss -a).
	Sockets  []sockets.SocketInfo `json:"sockets,omitempty"`
	Refusals map[string]uint64    `json:"refusals"`
}

// StatusReport is the "status" report: tapstack status's document.
type StatusReport struct {
	Namespace    string            `json:"namespace"`
	PID          int               `json:"pid"`
	TAP          string            `json:"tap"`
	StackAddrs   []string          `json:"stack_addrs"`
	NSAddrs      []string          `json:"ns_addrs"`
	MTU          int               `json:"mtu"`
	Offload      bool              `json:"offload"`
	TAPReader    string            `json:"tap_reader"` // "flow engine's loop" or "link's goroutines"
	Engine       string            `json:"relay_engine"`
	Uptime       time.Duration     `json:"uptime_ns"`
	Flows        int               `json:"flows"`
	Forwards     int               `json:"forwards"`
	BytesUp      uint64            `json:"bytes_up"`
	BytesDown    uint64            `json:"bytes_down"`
	RxFrames     uint64            `json:"rx_frames"`
	TxFrames     uint64            `json:"tx_frames"`
	SocketsInUse int               `json:"sockets_in_use"`
	SocketLimit  int               `json:"socket_limit"`
	Captures     []string          `json:"captures,omitempty"`
	Drops        map[string]uint64 `json:"drops"`
	RSSKiB       int               `json:"rss_kib"`
	Goroutines   int               `json:"goroutines"`
}
