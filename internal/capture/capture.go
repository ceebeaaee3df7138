// Package capture runs the packet captures of a running daemon: files
// and live streams started and stopped through the control socket, each
// a link.Pcap observing the TAP's endpoint.
package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/tapstack/tapstack/link"
)

// MaxCaptures bounds the captures running at once.
const MaxCaptures = 8

// streamFlush is how often a live stream's frames are sent.
const streamFlush = 100 * time.Millisecond

// Set is the captures of one link. Its methods are safe for concurrent
// use.
type Set struct {
	ep *link.Endpoint

	mu     sync.Mutex
	runs   map[*run]bool // protected by mu
	closed bool          // protected by mu
}

// run is one capture.
type run struct {
	desc   string
	p      *link.Pcap
	remove func()
	done   chan struct{}
	once   sync.Once
}

// stop ends the capture: no frame after it is written, the file is
// flushed and closed.
func (r *run) stop() error {
	var err error
	r.once.Do(func() {
		r.remove()
		if r.p != nil {
			err = r.p.Close()
		}
		close(r.done)
	})
	return err
}

// New returns the captures of ep.
func New(ep *link.Endpoint) *Set { return &Set{ep: ep, runs: map[*run]bool{}} }

// reserve takes a place for a capture, before its file or stream is
// made: a refused one writes nothing.
func (s *Set) reserve(desc string) (*run, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("the daemon is stopping")
	}
	if len(s.runs) >= MaxCaptures {
		return nil, fmt.Errorf("%d captures are running already: stop them first", MaxCaptures)
	}
	r := &run{desc: desc, done: make(chan struct{}), remove: func() {}}
	s.runs[r] = true
	return r, nil
}

// attach starts observing with p, unless Stop or Close ended r first.
func (s *Set) attach(r *run, p *link.Pcap) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.runs[r] {
		return false
	}
	r.p = p
	r.remove = s.ep.AddObserver(p)
	return true
}

func (s *Set) forget(r *run) {
	s.mu.Lock()
	delete(s.runs, r)
	s.mu.Unlock()
}

// StartFile captures to the file at path (absolute, made anew) until
// Stop.
func (s *Set) StartFile(path string, snaplen int) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("capture file %q: the path must be absolute", path)
	}
	r, err := s.reserve(path)
	if err != nil {
		return err
	}
	p, err := link.CreatePcap(path, link.PcapOptions{Snaplen: snaplen})
	if err != nil {
		s.forget(r)
		return err
	}
	if !s.attach(r, p) {
		p.Close()
		return errors.New("the captures were stopped meanwhile")
	}
	return nil
}

// Stream writes a live capture to w until ctx ends, a write to w fails
// or Stop; it returns then. started runs once the capture is attached
// (before anything is written to w); a capture that cannot start returns
// its error without calling it.
func (s *Set) Stream(ctx context.Context, w io.Writer, snaplen int, started func()) error {
	var once sync.Once
	gate := writerFunc(func(b []byte) (int, error) {
		once.Do(started)
		return w.Write(b)
	})
	r, err := s.reserve("-")
	if err != nil {
		return err
	}
	defer s.forget(r)
	p, err := link.NewPcap(gate, link.PcapOptions{Snaplen: snaplen, Flush: streamFlush})
	if err != nil {
		return err
	}
	if !s.attach(r, p) {
		p.Close()
		return nil
	}
	// Attached first: a frame that crosses the link once the caller
	// hears that the stream started is in it.
	once.Do(started)
	t := time.NewTicker(streamFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.stop()
			return nil
		case <-r.done:
			return nil
		case <-t.C:
			if p.Err() != nil { // the reader went away
				r.stop()
				return nil
			}
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// Stop ends every capture, files and streams, and says how many there
// were.
func (s *Set) Stop() (int, error) {
	s.mu.Lock()
	runs := make([]*run, 0, len(s.runs))
	for r := range s.runs {
		runs = append(runs, r)
	}
	s.runs = map[*run]bool{}
	s.mu.Unlock()
	var first error
	for _, r := range runs {
		if err := r.stop(); err != nil && first == nil {
			first = fmt.Errorf("capture %s: %w", r.desc, err)
		}
	}
	return len(runs), first
}

// List names the captures running: their files, "-" for a stream.
func (s *Set) List() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var l []string
	for r := range s.runs {
		l = append(l, r.desc)
	}
	sort.Strings(l)
	return l
}

// Close stops every capture; no other starts.
func (s *Set) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.Stop()
}
