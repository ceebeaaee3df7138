// Package control is the control socket of a running tapstack daemon: a
// unix socket (mode 0600) that takes one JSON request per line and answers
// one JSON line. Through it `tapstack forward` changes the port forwards,
// `tapstack capture` starts and stops captures, `tapstack impair` changes
// the wire's impairment, and `tapstack ss` and `tapstack status` read the
// flows, the counters and the SSReport and StatusReport documents. The
// server side is a Handler (with Capturer, Impairer and Reporter); the
// client side is Call and Stream.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Dir holds the sockets of root's daemons.
const Dir = "/run/tapstack"

// DefaultDir is where a daemon puts its socket: Dir for root (the real
// one: root of a user namespace may not write there), else
// $XDG_RUNTIME_DIR/tapstack, else a per-user folder in the temp dir.
func DefaultDir() string {
	if os.Geteuid() == 0 {
		if unix.Access(Dir, unix.W_OK) == nil || unix.Access(filepath.Dir(Dir), unix.W_OK) == nil {
			return Dir
		}
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "tapstack")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("tapstack-%d", hostUID()))
}

// hostUID is this process's user ID as the host sees it: root of a user
// namespace (a rootless slirp4netns's sandbox) is an ordinary user
// outside, and must not take real root's folder.
func hostUID() int {
	uid := os.Geteuid()
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return uid
	}
	for _, line := range strings.Split(string(b), "\n") {
		var inside, outside, count int
		if n, _ := fmt.Sscan(line, &inside, &outside, &count); n == 3 && uid >= inside && uid < inside+count {
			return outside + uid - inside
		}
	}
	return uid
}

// PathFor is the default socket of the daemon serving namespace name.
func PathFor(name string) string { return filepath.Join(DefaultDir(), name+".sock") }

// Request is one command.
type Request struct {
	// Op is "add", "rm", "ls" or "stats" (port forwards and counters);
	// "capture", "capture-stop" or "captures" (a Capturer's); "impair"
	// (an Impairer's, with Spec); or a Reporter's report, such as "ss"
	// or "status".
	Op   string `json:"op"`
	Spec string `json:"spec,omitempty"` // a port forward, for add and rm
	// File is where "capture" writes: an absolute path, or "-" for a
	// stream on this connection, after the answer's line.
	File    string `json:"file,omitempty"`
	Snaplen int    `json:"snaplen,omitempty"` // for "capture"; 0: whole frames
}

// Response is the answer to one Request.
type Response struct {
	OK       bool              `json:"ok"`
	Error    string            `json:"error,omitempty"`
	Forwards []string          `json:"forwards,omitempty"`
	Stats    map[string]uint64 `json:"stats,omitempty"`
	Captures []string          `json:"captures,omitempty"` // running captures
	Stopped  int               `json:"stopped,omitempty"`  // captures stopped
	Report   json.RawMessage   `json:"report,omitempty"`   // a Reporter's answer
	Impair   string            `json:"impair,omitempty"`   // the impairment in force
}

// Handler executes requests.
type Handler interface {
	AddForward(spec string) error
	RemoveForward(spec string) error
	ListForwards() []string
	// Stats returns the daemon's counters by name.
	Stats() map[string]uint64
}

// Capturer is a Handler that captures frames at run time.
type Capturer interface {
	// StartCapture writes every frame to the file at path until
	// StopCaptures.
	StartCapture(path string, snaplen int) error
	// StreamCapture writes a capture to w until ctx ends, w fails or
	// StopCaptures, and returns then; started runs before the first byte
	// is written, and not at all if it returns an error at once.
	StreamCapture(ctx context.Context, w io.Writer, snaplen int, started func()) error
	// StopCaptures ends them all and says how many there were.
	StopCaptures() (int, error)
	// Captures names those running: files, "-" for streams.
	Captures() []string
}

// Impairer is a Handler whose wire can be impaired at run time.
type Impairer interface {
	// Impair sets the impairment to spec ("off" removes it) unless spec
	// is empty, and describes the one in force.
	Impair(spec string) (string, error)
}

// Reporter is a Handler that answers other ops with a JSON document.
type Reporter interface {
	// Report answers op; ok false means it does not know op.
	Report(op string) (report any, ok bool, err error)
}

// Server serves a Handler on a unix socket until Close. If the socket
// file is removed or replaced under it (a cleaner of /run, a second
// daemon started by mistake), it makes it again within a second and logs
// one line: the daemon stays reachable.
type Server struct {
	path string
	h    Handler
	logf func(format string, args ...any)
	wg   sync.WaitGroup
	stop chan struct{}

	mu     sync.Mutex
	ln     net.Listener // protected by mu
	ino    uint64       // inode of our socket file; protected by mu
	closed bool         // protected by mu
}

// watchPeriod is how often the server checks that its socket file is
// still its own.
const watchPeriod = 500 * time.Millisecond

// Listen makes the socket at path (mode 0600, its directory 0700 when
// created) and serves h on it. A stale socket of a dead daemon is
// replaced; a live one is an error. logf, if not nil, hears of a socket
// made again.
func Listen(path string, h Handler, logf func(format string, args ...any)) (*Server, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is in use by a running daemon", path)
	}
	s := &Server{path: path, h: h, logf: logf, stop: make(chan struct{})}
	if err := s.listen(); err != nil {
		return nil, err
	}
	s.wg.Add(1)
	go s.watch()
	return s, nil
}

// listen (re)makes the socket file and serves on it.
func (s *Server) listen() error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	os.Remove(s.path)
	ln, err := net.Listen("unix", s.path)
	if err != nil {
		return err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(s.path, 0o600); err != nil {
		ln.Close()
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(s.path, &st); err != nil {
		ln.Close()
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		ln.Close()
		return net.ErrClosed
	}
	old := s.ln
	s.ln, s.ino = ln, st.Ino
	if old != nil {
		old.Close()
	}
	s.wg.Add(1)
	go s.serve(ln)
	return nil
}

// watch makes the socket again when its file is gone or not ours.
func (s *Server) watch() {
	defer s.wg.Done()
	t := time.NewTicker(watchPeriod)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		var st unix.Stat_t
		err := unix.Stat(s.path, &st)
		s.mu.Lock()
		ours := err == nil && st.Ino == s.ino
		s.mu.Unlock()
		if ours {
			continue
		}
		if err := s.listen(); err != nil {
			if s.logf != nil && !errors.Is(err, net.ErrClosed) {
				s.logf("control socket %s was removed and cannot be made again: %v", s.path, err)
			}
			continue
		}
		if s.logf != nil {
			s.logf("control socket %s was removed or replaced; made it again", s.path)
		}
	}
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

func (s *Server) serve(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
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
				} else if req.Op == "capture" && req.File == "-" {
					s.stream(c, enc, req)
					return
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

// stream sends a live capture on c until the client goes or the server
// closes.
func (s *Server) stream(c net.Conn, enc *json.Encoder, req Request) {
	cp, ok := s.h.(Capturer)
	if !ok {
		_ = enc.Encode(Response{Error: "this daemon cannot capture"})
		return
	}
	_ = c.SetDeadline(time.Time{})
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	defer func() {
		cancel()
		<-watched
	}()
	go func() { // the client closing, or the server
		defer close(watched)
		done := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, c)
			close(done)
		}()
		select {
		case <-done:
		case <-s.stop:
			_ = c.SetReadDeadline(time.Now())
			<-done
		case <-ctx.Done():
			_ = c.SetReadDeadline(time.Now())
			<-done
		}
		cancel()
	}()
	err := cp.StreamCapture(ctx, c, req.Snaplen, func() { _ = enc.Encode(Response{OK: true}) })
	if err != nil {
		_ = enc.Encode(Response{Error: err.Error()})
	}
}

func (s *Server) do(req Request) Response {
	var err error
	if cp, ok := s.h.(Capturer); ok {
		switch req.Op {
		case "capture":
			if req.File == "" {
				return Response{Error: "capture: name a file (an absolute path) or - for a stream"}
			}
			if err := cp.StartCapture(req.File, req.Snaplen); err != nil {
				return Response{Error: err.Error()}
			}
			return Response{OK: true, Captures: cp.Captures()}
		case "capture-stop":
			n, err := cp.StopCaptures()
			if err != nil {
				return Response{Error: err.Error(), Stopped: n}
			}
			return Response{OK: true, Stopped: n}
		case "captures":
			return Response{OK: true, Captures: cp.Captures()}
		}
	}
	if im, ok := s.h.(Impairer); ok && req.Op == "impair" {
		desc, err := im.Impair(req.Spec)
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{OK: true, Impair: desc}
	}
	if rp, ok := s.h.(Reporter); ok {
		rep, known, err := rp.Report(req.Op)
		if known {
			if err != nil {
				return Response{Error: err.Error()}
			}
			b, err := json.Marshal(rep)
			if err != nil {
				return Response{Error: err.Error()}
			}
			return Response{OK: true, Report: b}
		}
	}
	switch req.Op {
	case "add":
		err = s.h.AddForward(req.Spec)
	case "rm":
		err = s.h.RemoveForward(req.Spec)
	case "ls":
		return Response{OK: true, Forwards: s.h.ListForwards()}
	case "stats":
		return Response{OK: true, Stats: s.h.Stats()}
	default:
		err = fmt.Errorf("unknown op %q", req.Op)
	}
	if err != nil {
		return Response{Error: err.Error()}
	}
	return Response{OK: true}
}

// Close stops serving, waits for the connections, and removes the
// socket file if it is still ours. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ln, ino := s.ln, s.ino
	s.mu.Unlock()
	close(s.stop)
	err := ln.Close()
	s.wg.Wait()
	var st unix.Stat_t
	if unix.Stat(s.path, &st) == nil && st.Ino == ino {
		os.Remove(s.path)
	}
	return err
}

// Stream asks the daemon at path for a live capture and copies it to w
// until ctx ends or the daemon stops it.
func Stream(ctx context.Context, path string, req Request, w io.Writer) error {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return fmt.Errorf("no daemon at %s: %w", path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("no answer from %s: %w", path, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return fmt.Errorf("answer from %s: %w", path, err)
	}
	if !resp.OK {
		return errors.New(resp.Error)
	}
	_, err = io.Copy(w, br)
	if ctx.Err() != nil {
		return nil
	}
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
