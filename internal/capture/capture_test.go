package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack"
)

// syncBuffer is a bytes.Buffer written by a capture while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

// frame is a minimal Ethernet frame.
func frame(n int) [][]byte {
	f := make([]byte, n)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x88, 0xb5})
	return [][]byte{f}
}

func TestFilesAndStreamsStartAndStop(t *testing.T) {
	a, b := link.Pipe()
	ep, err := link.New(link.Options{Devices: []link.Device{a}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := stack.New(stack.Config{Links: []stack.LinkConfig{{Name: "p0", Endpoint: ep}}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := New(ep)
	defer s.Close()
	if err := s.StartFile("relative.pcap", 0); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Fatalf("a relative path: %v", err)
	}
	file := filepath.Join(t.TempDir(), "x.pcap")
	if err := s.StartFile(file, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.StartFile(filepath.Join(t.TempDir(), "y.pcap"), 10); err == nil {
		t.Fatal("snaplen 10 accepted")
	}
	var out syncBuffer
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Stream(context.Background(), &out, 0, func() {
			out.Write([]byte("OK\n"))
			close(started)
		})
	}()
	<-started
	if got := s.List(); len(got) != 2 || got[0] != "-" || got[1] != file {
		t.Fatalf("List = %q", got)
	}
	for i := 0; i < 5; i++ {
		if err := b.WriteFrame(frame(100)); err != nil {
			t.Fatal(err)
		}
	}
	// The stream flushes within streamFlush.
	for deadline := time.Now().Add(5 * time.Second); out.Len() < 3+24+5*(16+100); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the stream holds %d bytes", out.Len())
		}
	}
	if n, err := s.Stop(); n != 2 || err != nil {
		t.Fatalf("Stop = %d, %v", n, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not end the stream")
	}
	got := out.Bytes()
	if !bytes.HasPrefix(got, []byte("OK\n")) || binary.LittleEndian.Uint32(got[3:]) != 0xa1b23c4d {
		t.Fatalf("the stream does not start with the answer and a pcap header: % x", got[:min(len(got), 16)])
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Size() != 24+5*(16+100) {
		t.Fatalf("the file: %v, %d bytes, want %d", err, fi.Size(), 24+5*(16+100))
	}
	// At most MaxCaptures at once; none after Close.
	dir := t.TempDir()
	for i := 0; i < MaxCaptures; i++ {
		if err := s.StartFile(filepath.Join(dir, strings.Repeat("c", i+1)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.StartFile(filepath.Join(dir, "one-more"), 0); err == nil {
		t.Fatalf("capture %d accepted", MaxCaptures+1)
	}
	s.Close()
	if len(s.List()) != 0 {
		t.Fatalf("captures after Close: %q", s.List())
	}
	if err := s.Stream(context.Background(), &out, 0, func() { t.Error("a stream started after Close") }); err == nil {
		t.Fatal("a stream after Close")
	}
}
