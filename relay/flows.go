package relay

import (
	"context"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// flow is one relayed or forwarded flow, as tapstack ss shows it. Its
// counters are updated by the goroutines that move its bytes.
type flow struct {
	proto string         // "tcp" or "udp"
	kind  string         // "relay" (from the namespace) or "forward"
	ns    netip.AddrPort // the namespace's end
	dst   string         // the other end, as the namespace or the host peer names it
	local string         // the host socket's local address
	fwd   *forward       // the forward it came through, if any
	total *byteCounters  // the gateway's
	start time.Time

	up, down atomic.Uint64 // bytes namespace → host, host → namespace
	last     atomic.Int64  // unix nanoseconds of the last byte either way
	closing  atomic.Bool   // one direction has ended
}

// FlowInfo describes one flow at a moment.
type FlowInfo struct {
	Proto string `json:"proto"`
	Kind  string `json:"kind"`  // relay or forward
	NS    string `json:"ns"`    // the namespace's address and port
	Dst   string `json:"dst"`   // the destination (relay) or the host peer (forward)
	Local string `json:"local"` // the host socket's local address
	State string `json:"state"` // established, or closing once one direction ended
	// Up and Down are the bytes moved namespace → host and host →
	// namespace (UDP: payload bytes).
	Up    uint64        `json:"bytes_up"`
	Down  uint64        `json:"bytes_down"`
	Age   time.Duration `json:"age_ns"`
	Idle  time.Duration `json:"idle_ns"`
	Spec  string        `json:"forward,omitempty"` // the forward's spec
	Since time.Time     `json:"since"`
	// Engine is the flow engine's state of the connection, as
	// KEY:VALUE words (tapstack ss -i); empty for the stack engine's.
	Engine string `json:"engine,omitempty"`
}

// flowSet holds the flows in progress.
type flowSet struct {
	mu sync.Mutex
	m  map[*flow]struct{} // protected by mu
}

// byteCounters count what the gateway moved each way, all flows
// together.
type byteCounters struct {
	up, down atomic.Uint64
}

// newFlow registers a flow; the caller ends it with endFlow.
func (g *Gateway) newFlow(proto, kind string, ns netip.AddrPort, dst, local string, fw *forward) *flow {
	now := time.Now()
	f := &flow{proto: proto, kind: kind, ns: ns, dst: dst, local: local, fwd: fw, total: &g.bytes, start: now}
	f.last.Store(now.UnixNano())
	g.flowSet.mu.Lock()
	if g.flowSet.m == nil {
		g.flowSet.m = map[*flow]struct{}{}
	}
	g.flowSet.m[f] = struct{}{}
	g.flowSet.mu.Unlock()
	if fw != nil {
		fw.conns.Add(1)
	}
	g.logFlow("flow start", f)
	return f
}

// endFlow forgets f.
func (g *Gateway) endFlow(f *flow) {
	if f == nil {
		return
	}
	g.flowSet.mu.Lock()
	delete(g.flowSet.m, f)
	g.flowSet.mu.Unlock()
	g.logFlow("flow end", f)
}

// moved counts n bytes of f moved namespace → host (up) or back; f may
// be nil.
func (f *flow) moved(up bool, n int) {
	if f == nil || n <= 0 {
		return
	}
	f.last.Store(time.Now().UnixNano())
	if up {
		f.up.Add(uint64(n))
		f.total.up.Add(uint64(n))
		if f.fwd != nil {
			f.fwd.up.Add(uint64(n))
		}
		return
	}
	f.down.Add(uint64(n))
	f.total.down.Add(uint64(n))
	if f.fwd != nil {
		f.fwd.down.Add(uint64(n))
	}
}

// halfClosed marks f closing: one direction has ended.
func (f *flow) halfClosed() {
	if f != nil {
		f.closing.Store(true)
	}
}

func (f *flow) info(now time.Time) FlowInfo {
	st := "established"
	if f.closing.Load() {
		st = "closing"
	}
	i := FlowInfo{
		Proto: f.proto, Kind: f.kind, NS: f.ns.String(), Dst: f.dst, Local: f.local, State: st,
		Up: f.up.Load(), Down: f.down.Load(), Since: f.start,
		Age: now.Sub(f.start), Idle: now.Sub(time.Unix(0, f.last.Load())),
	}
	if f.fwd != nil {
		i.Spec = f.fwd.String()
	}
	return i
}

// FlowCount is how many flows FlowList would list.
func (g *Gateway) FlowCount() int {
	g.flowSet.mu.Lock()
	n := len(g.flowSet.m)
	g.flowSet.mu.Unlock()
	return n + g.engineFlowCount()
}

// FlowList returns the flows in progress, oldest first.
func (g *Gateway) FlowList() []FlowInfo {
	now := time.Now()
	g.flowSet.mu.Lock()
	out := make([]FlowInfo, 0, len(g.flowSet.m))
	for f := range g.flowSet.m {
		out = append(out, f.info(now))
	}
	g.flowSet.mu.Unlock()
	out = g.engineFlows(out, now)
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out
}

// ForwardInfo describes a port forward and what went through it.
type ForwardInfo struct {
	Spec  string `json:"spec"`
	Conns uint64 `json:"connections"` // connections (TCP) or flows (UDP) so far
	Up    uint64 `json:"bytes_up"`    // namespace → host
	Down  uint64 `json:"bytes_down"`  // host → namespace
}

// ForwardList returns the port forwards with their counters, sorted.
func (g *Gateway) ForwardList() []ForwardInfo {
	g.mu.Lock()
	out := make([]ForwardInfo, 0, len(g.fwds))
	for _, fw := range g.fwds {
		out = append(out, ForwardInfo{Spec: fw.String(), Conns: fw.conns.Load(), Up: fw.up.Load(), Down: fw.down.Load()})
	}
	g.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Spec < out[j].Spec })
	return out
}

// DialInfo is a host dial in progress.
type DialInfo struct {
	Dst string        `json:"dst"`
	Age time.Duration `json:"age_ns"`
}

// PendingDials lists the host dials in progress, oldest first.
func (g *Gateway) PendingDials() []DialInfo {
	now := time.Now()
	var out []DialInfo
	g.dials.each(func(s *dialSlot) {
		out = append(out, DialInfo{Dst: s.dst.String(), Age: now.Sub(s.started)})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Age > out[j].Age })
	return out
}

// logFlow logs a flow's start or end at debug level, with its five-tuple
// and, at its end, its bytes and age.
func (g *Gateway) logFlow(msg string, f *flow) {
	l := g.cfg.Log
	if l == nil || !l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	attrs := []any{"proto", f.proto, "kind", f.kind, "src", f.ns.String(), "dst", f.dst, "local", f.local}
	if msg == "flow end" {
		attrs = append(attrs, "bytes_up", f.up.Load(), "bytes_down", f.down.Load(), "age", time.Since(f.start).Round(time.Millisecond))
	}
	l.Debug(msg, attrs...)
}

// Bytes returns the bytes relayed and forwarded so far, namespace → host
// and back.
func (g *Gateway) Bytes() (up, down uint64) { return g.bytes.up.Load(), g.bytes.down.Load() }
