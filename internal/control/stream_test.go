package control

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDaemon captures by writing "frame" every 10 ms, reports and
// impairs.
type fakeDaemon struct {
	fakeForwards
	mu      sync.Mutex
	files   []string
	streams int
	stop    chan struct{}
	impair  string
}

func (f *fakeDaemon) StartCapture(path string, snaplen int) error {
	if snaplen < 0 {
		return errors.New("bad snaplen")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files = append(f.files, path)
	return nil
}

func (f *fakeDaemon) StreamCapture(ctx context.Context, w io.Writer, snaplen int, started func()) error {
	if snaplen < 0 {
		return errors.New("bad snaplen")
	}
	f.mu.Lock()
	f.streams++
	stop := f.stop
	f.mu.Unlock()
	started()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-stop:
			return nil
		case <-t.C:
			if _, err := w.Write([]byte("frame")); err != nil {
				return nil
			}
		}
	}
}

func (f *fakeDaemon) StopCaptures() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.files) + f.streams
	f.files, f.streams = nil, 0
	close(f.stop)
	f.stop = make(chan struct{})
	return n, nil
}

func (f *fakeDaemon) Captures() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.files...)
}

func (f *fakeDaemon) Impair(spec string) (string, error) {
	if spec == "bad" {
		return "", errors.New("bad impairment")
	}
	if spec != "" {
		f.impair = spec
	}
	return "now " + f.impair, nil
}

func (f *fakeDaemon) Report(op string) (any, bool, error) {
	if op != "status" {
		return nil, false, nil
	}
	return map[string]int{"flows": 3}, true, nil
}

// syncBuffer is written by Stream while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestCapturesStreamsReportsAndImpairs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	h := &fakeDaemon{fakeForwards: fakeForwards{m: map[string]bool{}}, stop: make(chan struct{})}
	s, err := Listen(path, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if resp, err := Call(path, Request{Op: "capture", File: "/tmp/x.pcap"}); err != nil || len(resp.Captures) != 1 {
		t.Fatalf("capture to a file: %+v %v", resp, err)
	}
	if _, err := Call(path, Request{Op: "capture"}); err == nil {
		t.Fatal("a capture without a file accepted")
	}
	if err := Stream(context.Background(), path, Request{Op: "capture", File: "-", Snaplen: -1}, io.Discard); err == nil || !strings.Contains(err.Error(), "bad snaplen") {
		t.Fatalf("a stream with a bad snaplen: %v", err)
	}
	// A stream ends with --stop; another with its client's context.
	var out syncBuffer
	ended := make(chan error, 1)
	go func() { ended <- Stream(context.Background(), path, Request{Op: "capture", File: "-"}, &out) }()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), "frameframe"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the stream brought %q", out.String())
		}
	}
	if resp, err := Call(path, Request{Op: "capture-stop"}); err != nil || resp.Stopped != 2 {
		t.Fatalf("capture-stop: %+v %v", resp, err)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("the stream ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("capture-stop did not end the stream")
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { ended <- Stream(ctx, path, Request{Op: "capture", File: "-"}, io.Discard) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("a cancelled stream: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelling the client did not end the stream")
	}
	if resp, err := Call(path, Request{Op: "impair", Spec: "loss=1%"}); err != nil || resp.Impair != "now loss=1%" {
		t.Fatalf("impair: %+v %v", resp, err)
	}
	if _, err := Call(path, Request{Op: "impair", Spec: "bad"}); err == nil {
		t.Fatal("a bad impairment accepted")
	}
	if resp, err := Call(path, Request{Op: "status"}); err != nil || string(resp.Report) != `{"flows":3}` {
		t.Fatalf("status: %+v %v", resp, err)
	}
	if _, err := Call(path, Request{Op: "nonsense"}); err == nil {
		t.Fatal("an unknown op accepted")
	}
}
