// Package slirpapi serves slirp4netns's API socket on a tapstack
// gateway: the JSON requests add_hostfwd, list_hostfwd and
// remove_hostfwd, one request per connection, answered byte for byte as
// slirp4netns 1.2 answers them (rootlesskit's and podman's port drivers
// speak it). The forwards are the gateway's, so `tapstack forward ls`
// lists them too.
package slirpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/tapstack/tapstack/relay"
)

// maxRequest is the largest request read, as slirp4netns's buffer.
const maxRequest = 4096

// Forwarder is what the API changes: a gateway's port forwards.
type Forwarder interface {
	AddForward(f relay.Forward) error
	RemoveForward(spec string) error
}

// Server serves the API on a unix socket until Close.
type Server struct {
	ln    net.Listener
	path  string
	fwd   Forwarder
	guest netip.Addr
	wg    sync.WaitGroup

	mu     sync.Mutex
	nextID int             // protected by mu
	byID   map[int]hostfwd // protected by mu
}

// hostfwd is one forward added through the API.
type hostfwd struct {
	ID        int    `json:"id"`
	Proto     string `json:"proto"`
	HostAddr  string `json:"host_addr"`
	HostPort  int    `json:"host_port"`
	GuestAddr string `json:"guest_addr"`
	GuestPort int    `json:"guest_port"`
	spec      string
}

// Listen makes the socket at path (replacing a stale file) and serves
// fwd on it; guest is the namespace's address, the guest_addr of a
// forward that names none (another one is the gateway's to accept).
func Listen(path string, fwd Forwarder, guest netip.Addr) (*Server, error) {
	s, err := Bind(path)
	if err != nil {
		return nil, err
	}
	s.Serve(fwd, guest)
	return s, nil
}

// Bind makes the socket at path (replacing a stale file) without serving
// it yet: clients that connect wait until Serve. slirp4netns's users
// talk to the socket as soon as the TAP is up, so it must exist first.
// A path that does not fit a unix socket (108 bytes) is an error, with
// slirp4netns's words.
func Bind(path string) (*Server, error) {
	if len(path) >= 108 {
		return nil, fmt.Errorf("the specified API socket path is too long (>= 108)")
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	return &Server{ln: ln, path: path, nextID: 1, byID: map[int]hostfwd{}}, nil
}

// Serve starts answering requests on a socket made by Bind.
func (s *Server) Serve(fwd Forwarder, guest netip.Addr) {
	s.fwd, s.guest = fwd, guest
	s.wg.Add(1)
	go s.serve()
}

// Close stops serving, removes the forwards added through the API and
// the socket file. It is idempotent.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	os.Remove(s.path)
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, f := range s.byID {
		if s.fwd == nil {
			break
		}
		_ = s.fwd.RemoveForward(f.spec)
		delete(s.byID, id)
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, maxRequest)
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			var resp []byte
			if n == len(buf) {
				resp = errResp("bad request: too large message")
			} else {
				resp = s.Handle(buf[:n])
			}
			_, _ = c.Write(resp)
			if uc, ok := c.(*net.UnixConn); ok {
				_ = uc.CloseWrite()
			}
		}()
	}
}

func errResp(desc string) []byte {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"desc": desc}})
	return b
}

// request is an API request; numbers are floats, as JSON has them.
type request struct {
	Execute   *string `json:"execute"`
	Arguments struct {
		Proto     *string  `json:"proto"`
		HostAddr  *string  `json:"host_addr"`
		HostPort  *float64 `json:"host_port"`
		GuestAddr *string  `json:"guest_addr"`
		GuestPort *float64 `json:"guest_port"`
		ID        *float64 `json:"id"`
	} `json:"arguments"`
}

// Handle answers one request, as slirp4netns does.
func (s *Server) Handle(b []byte) []byte {
	var raw any
	if err := json.Unmarshal(b, &raw); err != nil {
		return errResp("bad request: cannot parse JSON")
	}
	if _, ok := raw.(map[string]any); !ok {
		return errResp("bad request: json_object() failed")
	}
	var req request
	if err := json.Unmarshal(b, &req); err != nil || req.Execute == nil {
		return errResp("bad request: no execute found")
	}
	switch *req.Execute {
	case "add_hostfwd":
		return s.add(req)
	case "list_hostfwd":
		return s.list()
	case "remove_hostfwd":
		return s.remove(req)
	}
	return errResp("bad request: unknown execute")
}

func (s *Server) add(req request) []byte {
	a := req.Arguments
	bad := func(what string) []byte { return errResp("bad request: add_hostfwd: bad arguments." + what) }
	if a.Proto == nil || (*a.Proto != "tcp" && *a.Proto != "udp") {
		return bad("proto")
	}
	hostAddr := "0.0.0.0"
	if a.HostAddr != nil && *a.HostAddr != "" {
		hostAddr = *a.HostAddr
	}
	ha, err := netip.ParseAddr(hostAddr)
	if err != nil || !ha.Is4() {
		return bad("host_addr")
	}
	port := func(p *float64) int {
		if p == nil || *p != float64(int(*p)) || *p < 1 || *p > 65535 {
			return 0
		}
		return int(*p)
	}
	hp := port(a.HostPort)
	if hp == 0 {
		return bad("host_port")
	}
	guest := s.guest
	if a.GuestAddr != nil && *a.GuestAddr != "" {
		g, err := netip.ParseAddr(*a.GuestAddr)
		if err != nil || !g.Is4() {
			return bad("guest_addr")
		}
		guest = g
	}
	gp := port(a.GuestPort)
	if gp == 0 {
		return bad("guest_port")
	}
	f := relay.Forward{Proto: *a.Proto, Host: netip.AddrPortFrom(ha, uint16(hp)), NSPort: uint16(gp)}
	if guest != s.guest {
		f.NSAddr = guest
	}
	if err := s.fwd.AddForward(f); err != nil {
		return errResp("bad request: add_hostfwd: slirp_add_hostfwd failed")
	}
	s.mu.Lock()
	id := s.nextID
	s.nextID++
	s.byID[id] = hostfwd{ID: id, Proto: f.Proto, HostAddr: ha.String(), HostPort: hp, GuestAddr: guest.String(), GuestPort: gp, spec: f.String()}
	s.mu.Unlock()
	return []byte(fmt.Sprintf(`{"return":{"id":%d}}`, id))
}

func (s *Server) list() []byte {
	s.mu.Lock()
	entries := make([]hostfwd, 0, len(s.byID))
	for _, f := range s.byID {
		entries = append(entries, f)
	}
	s.mu.Unlock()
	sort.Slice(entries, func(i, j int) bool { return entries[i].ID < entries[j].ID })
	b, _ := json.Marshal(map[string]any{"entries": entries})
	return b
}

func (s *Server) remove(req request) []byte {
	id := -1
	if p := req.Arguments.ID; p != nil && *p == float64(int(*p)) {
		id = int(*p)
	}
	s.mu.Lock()
	f, ok := s.byID[id]
	s.mu.Unlock()
	if !ok {
		return errResp("bad request: remove_hostfwd: bad arguments.id")
	}
	if err := s.fwd.RemoveForward(f.spec); err != nil {
		return errResp("bad request: remove_hostfwd: slirp_remove_hostfwd failed")
	}
	s.mu.Lock()
	delete(s.byID, id)
	s.mu.Unlock()
	return []byte(`{"return":{}}`)
}
