package daemon

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tapstack/tapstack/link"
	"github.com/tapstack/tapstack/stack"
)

// TestSpoofedFramesAreLoggedOncePerPeriod: frames the link's filter drops
// are reported in one line per period, none when there were none.
func TestSpoofedFramesAreLoggedOncePerPeriod(t *testing.T) {
	a, b := link.Pipe()
	ep, err := link.New(link.Options{Devices: []link.Device{a}, Filter: func([]byte) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	st, err := stack.New(stack.Config{Links: []stack.LinkConfig{{Endpoint: ep}}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := 0; i < 100; i++ {
		b.WriteFrame([][]byte{make([]byte, 60)})
	}
	for deadline := time.Now().Add(5 * time.Second); ep.Stats().RxFiltered < 100 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	var mu sync.Mutex
	var lines []string
	stop := logSpoofed(ep, 50*time.Millisecond, func(f string, args ...any) {
		mu.Lock()
		lines = append(lines, fmt.Sprintf(f, args...))
		mu.Unlock()
	})
	time.Sleep(300 * time.Millisecond) // several periods, one with frames
	stop()
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 1 || !strings.Contains(lines[0], "dropped 100 frames") {
		t.Fatalf("log lines %q, want one saying 100 frames were dropped", lines)
	}
}
