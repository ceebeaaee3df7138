// Package control is the control socket of a running tapstack daemon: a
// unix socket (mode 0600) that takes one JSON request per line and answers
// one JSON line, so that `tapstack forward add|rm|ls` can change a running
// daemon's port forwards.
package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Dir holds the sockets of root's daemons.
const Dir = "/run/tapstack"

// DefaultDir is where a daemon puts its socket: Dir for root, else
// $XDG_RUNTIME_DIR/tapstack, else a per-user folder in the temp dir.
func DefaultDir() string {
	if os.Geteuid() == 0 {
		return Dir
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "tapstack")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("tapstack-%d", os.Geteuid()))
}

// PathFor is the default socket of the daemon serving namespace name.
func PathFor(name string) string { return filepath.Join(DefaultDir(), name+".sock") }

// Request is one command.
type Request struct {
	Op   string `json:"op"`             // "add", "rm" or "ls"
	Spec string `json:"spec,omitempty"` // a port forward, for add and rm
}

// Response is the answer to one Request.
type Response struct {
	OK       bool     `json:"ok"`
	Error    string   `json:"error,omitempty"`
	Forwards []string `json:"forwards,omitempty"`
}

// Handler executes requests.
type Handler interface {
	AddForward(spec string) error
	RemoveForward(spec string) error
	ListForwards() []string
}

// Server serves a Handler on a unix socket until Close.
type Server struct {
	ln   net.Listener
	path string
	h    Handler
	wg   sync.WaitGroup
}

// Listen makes the socket at path (mode 0600, its directory 0700 when
// created) and serves h on it. A stale socket of a dead daemon is
// replaced; a live one is an error.
func Listen(path string, h Handler) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is in use by a running daemon", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	s := &Server{ln: ln, path: path, h: h}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

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
			sc := bufio.NewScanner(c)
			enc := json.NewEncoder(c)
			for sc.Scan() {
				var req Request
				var resp Response
				if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
					resp = Response{Error: "bad request: " + err.Error()}
				} else {
					resp = s.do(req)
				}
				if enc.Encode(resp) != nil {
					return
				}
			}
		}()
	}
}

func (s *Server) do(req Request) Response {
	var err error
	switch req.Op {
	case "add":
		err = s.h.AddForward(req.Spec)
	case "rm":
		err = s.h.RemoveForward(req.Spec)
	case "ls":
		return Response{OK: true, Forwards: s.h.ListForwards()}
	default:
		err = fmt.Errorf("unknown op %q (add, rm, ls)", req.Op)
	}
	if err != nil {
		return Response{Error: err.Error()}
	}
	return Response{OK: true}
}

// Close stops serving, waits for the connections, and removes the socket.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	os.Remove(s.path)
	return err
}

// Call sends one request to the daemon at path.
func Call(path string, req Request) (Response, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return Response{}, fmt.Errorf("no daemon at %s: %w", path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return Response{}, err
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return Response{}, err
	}
	if !resp.OK {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}
