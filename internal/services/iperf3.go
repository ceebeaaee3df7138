package services

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/stack"
)

// IPerf3Port is where the iperf3 service listens, as iperf3 -s does.
const IPerf3Port = 5201

// iperf3 protocol: the control connection carries one-byte states and
// length-prefixed JSON; data streams open with the test's 37-byte cookie.
const (
	ip3TestStart       = 1
	ip3TestRunning     = 2
	ip3TestEnd         = 4
	ip3ParamExchange   = 9
	ip3CreateStreams   = 10
	ip3ServerTerminate = 11
	ip3ClientTerminate = 12
	ip3ExchangeResults = 13
	ip3DisplayResults  = 14
	ip3Done            = 16
	ip3AccessDenied    = 0xff // -1 as a signed byte

	ip3CookieSize = 37
)

// udpConnectReply answers a UDP stream's first datagram, as iperf3 writes
// it (0x39383736 in the host byte order of x86).
var udpConnectReply = []byte{0x36, 0x37, 0x38, 0x39}

type ip3Params struct {
	TCP        bool   `json:"tcp"`
	UDP        bool   `json:"udp"`
	Parallel   int    `json:"parallel"`
	Reverse    bool   `json:"reverse"`
	Bidir      bool   `json:"bidirectional"`
	Len        int    `json:"len"`
	Bandwidth  uint64 `json:"bandwidth"`
	UDP64      bool   `json:"udp_counters_64bit"`
	ClientVers string `json:"client_version"`
}

type ip3Stream struct {
	ID            int     `json:"id"`
	Bytes         uint64  `json:"bytes"`
	Retransmits   int     `json:"retransmits"`
	Jitter        float64 `json:"jitter"`
	Errors        uint64  `json:"errors"`
	OmittedErrors uint64  `json:"omitted_errors"`
	Packets       uint64  `json:"packets"`
	OmittedPkts   uint64  `json:"omitted_packets"`
	StartTime     float64 `json:"start_time"`
	EndTime       float64 `json:"end_time"`
}

type ip3Results struct {
	CPUTotal   float64     `json:"cpu_util_total"`
	CPUUser    float64     `json:"cpu_util_user"`
	CPUSystem  float64     `json:"cpu_util_system"`
	SenderRetr int         `json:"sender_has_retransmits"`
	Congestion string      `json:"congestion_used,omitempty"`
	Streams    []ip3Stream `json:"streams"`
}

// iperf3Server speaks enough of iperf3's protocol for stock clients:
// TCP in both directions (-R), parallel streams (-P) and UDP from the
// client (-u, any -b). One test runs at a time; others are turned away as
// iperf3 -s does.
type iperf3Server struct {
	st *stack.Stack

	mu     sync.Mutex
	cookie string        // the running test's; protected by mu
	conns  chan net.Conn // data connections for it; protected by mu
}

func (s *Server) startIPerf3(st *stack.Stack) error {
	srv := &iperf3Server{st: st}
	for _, addr := range OwnAddrs(st) {
		sock, err := listen(st, addr, sockets.SOCK_STREAM, IPerf3Port)
		if err != nil {
			return err
		}
		if !s.track(sock) {
			return errors.New("server closed")
		}
		ln := sockets.NewListener(sock)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			srv.acceptLoop(s, ln)
		}()
	}
	return nil
}

func (p *iperf3Server) acceptLoop(s *Server, ln *sockets.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, sockets.ErrSocketClosed) {
				return
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		sc := c.(*sockets.Conn)
		if !s.track(sc.Socket()) {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			p.handle(s, c)
		}()
	}
}

func (p *iperf3Server) handle(s *Server, c net.Conn) {
	cookie := make([]byte, ip3CookieSize)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, cookie); err != nil {
		s.untrack(c.(*sockets.Conn).Socket())
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	p.mu.Lock()
	switch {
	case p.cookie == "":
		p.cookie = string(cookie)
		p.conns = make(chan net.Conn, 128)
		p.mu.Unlock()
		p.runTest(s, c)
		p.mu.Lock()
		p.cookie = ""
		close(p.conns)
		for dc := range p.conns {
			s.untrack(dc.(*sockets.Conn).Socket())
		}
		p.mu.Unlock()
		s.untrack(c.(*sockets.Conn).Socket())
	case p.cookie == string(cookie):
		select {
		case p.conns <- c:
		default:
			s.untrack(c.(*sockets.Conn).Socket())
		}
		p.mu.Unlock()
	default:
		p.mu.Unlock()
		_, _ = c.Write([]byte{ip3AccessDenied})
		s.untrack(c.(*sockets.Conn).Socket())
	}
}

func writeState(c net.Conn, state byte) error {
	_, err := c.Write([]byte{state})
	return err
}

func readJSON(c net.Conn, v any) error {
	var l [4]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(l[:])
	if n > 1<<20 {
		return errors.New("iperf3: JSON too long")
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func writeJSON(c net.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	out := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(out, uint32(len(b)))
	copy(out[4:], b)
	_, err = c.Write(out)
	return err
}

// streamStats counts one data stream.
type streamStats struct {
	id                   int
	bytes, packets, lost atomic.Uint64
	lastSeq              atomic.Uint64
}

// runTest drives one test on its control connection.
func (p *iperf3Server) runTest(s *Server, ctl net.Conn) {
	fail := func() { _ = writeState(ctl, ip3ServerTerminate) }
	_ = ctl.SetDeadline(time.Now().Add(30 * time.Second))
	if writeState(ctl, ip3ParamExchange) != nil {
		return
	}
	var prm ip3Params
	if err := readJSON(ctl, &prm); err != nil {
		return
	}
	if prm.Parallel < 1 {
		prm.Parallel = 1
	}
	if prm.Parallel > 128 || prm.Bidir || (prm.UDP && prm.Reverse) {
		fail() // not supported: many streams, --bidir, UDP from the server
		return
	}
	blk := prm.Len
	if blk <= 0 || blk > 1<<20 {
		blk = 128 << 10
	}
	nextID := 0
	newID := func() int {
		nextID++
		if nextID == 2 { // iperf3 numbers its streams 1, 3, 4, …
			nextID = 3
		}
		return nextID
	}

	var streams []*streamStats
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	if prm.UDP {
		// Bind before the client sends its first datagram.
		local, _ := sockets.AddrPortOf(ctl.LocalAddr())
		for i := 0; i < prm.Parallel; i++ {
			network := "udp4"
			if local.Addr().Is6() && !local.Addr().Is4In6() {
				network = "udp6"
			}
			pc, err := sockets.ListenPacket(p.st, network, fmt.Sprintf("[%s]:%d", local.Addr().Unmap(), IPerf3Port))
			if err != nil {
				fail()
				return
			}
			closers = append(closers, pc)
			if i == 0 && writeState(ctl, ip3CreateStreams) != nil {
				return
			}
			_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
			b := make([]byte, 64)
			_, from, err := pc.ReadFrom(b)
			if err != nil {
				fail()
				return
			}
			a, _ := sockets.AddrPortOf(from)
			if err := pc.Socket().Connect(sockets.AddrFrom(a)); err != nil {
				fail()
				return
			}
			_ = pc.SetReadDeadline(time.Time{})
			st := &streamStats{id: newID()}
			streams = append(streams, st)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				udpReceive(pc, st, prm.UDP64)
			}()
			if _, err := pc.Write(udpConnectReply); err != nil {
				fail()
				return
			}
		}
	} else {
		if writeState(ctl, ip3CreateStreams) != nil {
			return
		}
		for i := 0; i < prm.Parallel; i++ {
			var dc net.Conn
			select {
			case dc = <-p.conns:
			case <-time.After(10 * time.Second):
				fail()
				return
			}
			closers = append(closers, dc)
			st := &streamStats{id: newID()}
			streams = append(streams, st)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				if prm.Reverse {
					tcpSend(dc, st, blk)
				} else {
					tcpReceive(dc, st, blk)
				}
			}()
		}
	}
	if writeState(ctl, ip3TestStart) != nil || writeState(ctl, ip3TestRunning) != nil {
		return
	}
	start := time.Now()
	_ = ctl.SetDeadline(time.Time{})
	state := make([]byte, 1)
	for {
		if _, err := io.ReadFull(ctl, state); err != nil {
			return
		}
		if state[0] == ip3TestEnd {
			break
		}
		if state[0] == ip3ClientTerminate {
			return
		}
	}
	elapsed := time.Since(start).Seconds()
	// Stop the streams; a sender's last bytes are counted already.
	for _, c := range closers {
		c.Close()
	}
	closers = nil
	_ = ctl.SetDeadline(time.Now().Add(30 * time.Second))
	if writeState(ctl, ip3ExchangeResults) != nil {
		return
	}
	var client json.RawMessage
	if err := readJSON(ctl, &client); err != nil {
		return
	}
	res := ip3Results{SenderRetr: -1}
	if prm.Reverse {
		res.SenderRetr = 0
	}
	for _, st := range streams {
		r := ip3Stream{ID: st.id, Bytes: st.bytes.Load(), Retransmits: -1, EndTime: elapsed}
		if prm.Reverse {
			r.Retransmits = 0
		}
		if prm.UDP {
			r.Packets = st.lastSeq.Load()
			r.Errors = st.lost.Load()
		}
		res.Streams = append(res.Streams, r)
	}
	if writeJSON(ctl, res) != nil || writeState(ctl, ip3DisplayResults) != nil {
		return
	}
	_, _ = io.ReadFull(ctl, state) // IPERF_DONE
}

func tcpReceive(c net.Conn, st *streamStats, blk int) {
	buf := make([]byte, blk)
	for {
		n, err := c.Read(buf)
		st.bytes.Add(uint64(n))
		if err != nil {
			return
		}
	}
}

func tcpSend(c net.Conn, st *streamStats, blk int) {
	buf := make([]byte, blk)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for {
		n, err := c.Write(buf)
		st.bytes.Add(uint64(n))
		if err != nil {
			return
		}
	}
}

// udpReceive counts datagrams and gaps in their sequence numbers (bytes
// 8–12, or 8–16 with 64-bit counters).
func udpReceive(pc *sockets.PacketConn, st *streamStats, wide bool) {
	buf := make([]byte, 65536)
	for {
		n, err := pc.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		st.bytes.Add(uint64(n))
		st.packets.Add(1)
		var seq uint64
		switch {
		case wide && n >= 16:
			seq = binary.BigEndian.Uint64(buf[8:16])
		case n >= 12:
			seq = uint64(binary.BigEndian.Uint32(buf[8:12]))
		default:
			continue
		}
		last := st.lastSeq.Load()
		if seq > last+1 {
			st.lost.Add(seq - last - 1)
		}
		if seq > last {
			st.lastSeq.Store(seq)
		}
	}
}
